// golden_io.h — what ptx_golden.cu and hopper_golden.cu share on the host: the recordings' input
// generator, device buffers and error checks (real CUDA runtime or the emulator's), and a minimal
// reader of the recordings' JSON lines (test/fixtures/gpu-golden/: one flat object per line, a
// "case" string, numbers, and arrays of number arrays).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "simt/simt.h"

namespace golden {

// gen(i, salt) of the recordings: an integer in -4..4.
inline int gen(uint32_t i, uint32_t salt) {
  const uint32_t x = ((i * 2654435761u) ^ (salt * 40503u)) >> 9;
  return static_cast<int>(x % 9) - 4;
}

inline bool check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("FAIL %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

// The launch's error, then the device's after a synchronize.
inline bool synced(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  return check(e, what);
}

// Device memory of n T's, copied from init or zeroed; get() reads it back.
template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n;
  explicit DevBuf(size_t count, const T* init = nullptr) : n(count) {
    if (!check(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), "cudaMalloc")) std::exit(1);
    if (init) cudaMemcpy(p, init, n * sizeof(T), cudaMemcpyHostToDevice);
    else cudaMemset(p, 0, n * sizeof(T));
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

// "key":"value" → value ("" when absent).
inline std::string string_field(const std::string& line, const char* key) {
  const std::string k = std::string("\"") + key + "\":\"";
  const size_t p = line.find(k);
  if (p == std::string::npos) return "";
  const size_t e = line.find('"', p + k.size());
  return line.substr(p + k.size(), e - p - k.size());
}

// "key":number → number (fallback when absent).
inline double number_field(const std::string& line, const char* key, double fallback) {
  const std::string k = std::string("\"") + key + "\":";
  const size_t p = line.find(k);
  return p == std::string::npos ? fallback : std::strtod(line.c_str() + p + k.size(), nullptr);
}

// "key":[[n, …], …] appended to rows; false when absent or malformed.
inline bool parse_rows(const std::string& line, const char* key, std::vector<std::vector<double>>& rows) {
  size_t p = line.find(std::string("\"") + key + "\":");
  if (p == std::string::npos) return false;
  p = line.find('[', p);
  if (p == std::string::npos) return false;
  const char* s = line.c_str() + p + 1;
  for (;;) {
    while (*s == ' ' || *s == ',') ++s;
    if (*s == ']') return true;
    if (*s != '[') return false;
    ++s;
    std::vector<double> row;
    for (;;) {
      while (*s == ' ' || *s == ',') ++s;
      if (*s == ']') {
        ++s;
        break;
      }
      char* end;
      const double v = std::strtod(s, &end);
      if (end == s) return false;
      row.push_back(v);
      s = end;
    }
    rows.push_back(std::move(row));
  }
}

// A misuse that must end the process with a message, run as the program's child mode
// (`<program> --die <index>`): the expected text is looked for in the child's output.
struct DeathCase {
  const char* name;
  const char* expect;
};

// Runs `self --die index`: true when the child failed and printed c.expect; else *detail says what it did.
inline bool dies_as_expected(const char* self, size_t index, const DeathCase& c, std::string* detail) {
  const std::string cmd = std::string("'") + self + "' --die " + std::to_string(index) + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (f && std::fgets(buf, sizeof buf, f)) out += buf;
  const int status = f ? pclose(f) : -1;
  if (status != 0 && out.find(c.expect) != std::string::npos) return true;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  *detail = "status " + std::to_string(status) + ", output: " + out;
  return false;
}

}  // namespace golden
