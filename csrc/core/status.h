// One error type for the whole core. The binding turns it into a JS LoraKernelsError with the
// same code string; nothing below the binding may abort the process on bad input.
#pragma once
#include <stdexcept>
#include <string>

namespace lk {

enum class ErrorCode { Argument, Shape, DType, Device, Unsupported, OutOfMemory, Cuda, Format, Disposed, Convergence };

constexpr const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Argument: return "ERR_ARGUMENT";
    case ErrorCode::Shape: return "ERR_SHAPE";
    case ErrorCode::DType: return "ERR_DTYPE";
    case ErrorCode::Device: return "ERR_DEVICE";
    case ErrorCode::Unsupported: return "ERR_UNSUPPORTED";
    case ErrorCode::OutOfMemory: return "ERR_OUT_OF_MEMORY";
    case ErrorCode::Cuda: return "ERR_CUDA";
    case ErrorCode::Format: return "ERR_FORMAT";
    case ErrorCode::Disposed: return "ERR_DISPOSED";
    case ErrorCode::Convergence: return "ERR_CONVERGENCE";
  }
  return "ERR_ARGUMENT";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// The ops' own checks (csrc/ops): "<op>: <what>" with the error's code.
[[noreturn]] inline void fail(const char* op, ErrorCode code, const std::string& what) {
  throw Error(code, std::string(op) + ": " + what);
}

}  // namespace lk
