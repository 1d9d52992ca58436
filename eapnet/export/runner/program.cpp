// An EAPNet ExecuTorch program: see program.h.
#include "program.h"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

// The wheel ships no extension/threadpool/threadpool.h. These declarations are the two members of
// executorch 1.5.1's ThreadPool the runner calls (exported by libexecutorch_threadpool.so); the class is
// only ever used through the pointer the library returns.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace eapnet {

namespace et = executorch::extension;
using executorch::aten::ScalarType;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

// "ExecuTorch error 0x23 InvalidProgram": the code and, for the ones a runner meets, its name.
std::string error_text(Error e) {
  const char* name = "";
  switch (e) {
    case Error::InvalidProgram: name = " InvalidProgram"; break;
    case Error::InvalidExternalData: name = " InvalidExternalData"; break;
    case Error::OperatorMissing: name = " OperatorMissing (a kernel library is not linked)"; break;
    case Error::MemoryAllocationFailed: name = " MemoryAllocationFailed"; break;
    case Error::NotFound: name = " NotFound"; break;
    case Error::DelegateInvalidCompatibility: name = " DelegateInvalidCompatibility"; break;
    case Error::DelegateMemoryAllocationFailed: name = " DelegateMemoryAllocationFailed"; break;
    default: break;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", static_cast<unsigned>(e));
  return std::string("ExecuTorch error ") + buf + name;
}

std::string shape_text(executorch::runtime::Span<const int32_t> sizes) {
  std::string s = "(";
  for (size_t k = 0; k < sizes.size(); ++k) s += (k ? ", " : "") + std::to_string(sizes[k]);
  return s + (sizes.size() == 1 ? ",)" : ")");
}

bool shape_is(executorch::runtime::Span<const int32_t> sizes, const std::vector<int32_t>& want) {
  return sizes.size() == want.size() && std::equal(want.begin(), want.end(), sizes.begin());
}

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// The file's header, checked before the runtime sees it (as eapnet.export.executorch_export.check_pte):
// a flatbuffer whose identifier "ET" + 2 digits sits at bytes 4-8, then an optional extended header
// ("eh00", its length, the program's size and the offset of the constant segments, little-endian u64s at
// bytes 16 and 24), both within the file. A truncated program is then one clear line, not a runtime error.
void check_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::invalid_argument(path + ": cannot open the program (" + std::strerror(errno) + ")");
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  unsigned char head[32] = {};
  in.seekg(0);
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<size_t>(in.gcount());
  if (got < 8 || head[4] != 'E' || head[5] != 'T' || !std::isdigit(head[6]) || !std::isdigit(head[7])) {
    throw std::invalid_argument(path + ": not an ExecuTorch program (no ET<nn> identifier at byte 4)");
  }
  if (got >= 12 && std::memcmp(head + 8, "eh00", 4) == 0) {
    if (got < 32) throw std::invalid_argument(path + ": the ExecuTorch program's extended header is cut off");
    const uint64_t program_size = read_le64(head + 16), segment_base = read_le64(head + 24);
    if (program_size > size || segment_base > size) {
      throw std::invalid_argument(path + " is truncated: its header gives a program of " +
                                  std::to_string(program_size) + " bytes and data from byte " +
                                  std::to_string(segment_base) + ", but the file has " + std::to_string(size) +
                                  " bytes");
    }
  }
}

bool g_verbose_log = false;

// The PAL's log hook (runtime/platform/platform.h). The default prints every info message (cpuinfo's
// probing of /sys, ...) to stderr, which would bury the runner's own one-line errors.
void emit_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
              const char* message, size_t length) {
  if (!g_verbose_log && level != kError && level != kFatal) return;
  while (length > 0 && message[length - 1] == '\n') --length;
  const char* base = std::strrchr(filename, '/');
  std::fprintf(stderr, "executorch: %c %s:%zu %.*s\n", static_cast<char>(level), base ? base + 1 : filename, line,
               static_cast<int>(length), message);
}

}  // namespace

void route_runtime_log(bool verbose) {
  g_verbose_log = verbose;
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_log, __FILE__));
}

struct HdrProgram::Impl {
  explicit Impl(const std::string& path) : module(path, et::Module::LoadMode::Mmap) {}
  et::Module module;
  et::TensorPtr input0, input1;  // views of the HdrProgram's buffers
};

HdrProgram::HdrProgram(const std::string& path) {
  check_header(path);
  impl_ = std::make_unique<Impl>(path);
  // Full flatbuffer verification: a damaged program is refused instead of crashing the runtime later.
  if (const Error e = impl_->module.load(executorch::runtime::Program::Verification::InternalConsistency);
      e != Error::Ok) {
    const std::string why = path + ": the runtime cannot load the program (" + error_text(e) + ")";
    if (e == Error::InvalidProgram || e == Error::InvalidExternalData) throw std::invalid_argument(why);  // the file
    throw ProgramError(why);
  }
  if (const Error e = impl_->module.load_method("forward"); e != Error::Ok) {
    throw ProgramError(path + ": the runtime cannot load its forward method (" + error_text(e) + ")");
  }
  const auto meta = impl_->module.method_meta("forward");
  if (!meta.ok()) throw ProgramError(path + ": no forward method metadata (" + error_text(meta.error()) + ")");
  const auto not_eapnet = [&](const std::string& why) {
    return std::invalid_argument(path + ": not an EAPNet program (" + why + ")");
  };
  if (meta->num_inputs() != 2 || meta->num_outputs() != 1) {
    throw not_eapnet(std::to_string(meta->num_inputs()) + " inputs and " + std::to_string(meta->num_outputs()) +
                     " outputs, expected 2 (frames, evs) and 1 (hdr)");
  }
  const auto in0 = meta->input_tensor_meta(0), in1 = meta->input_tensor_meta(1);
  const auto out = meta->output_tensor_meta(0);
  if (!in0.ok() || !in1.ok() || !out.ok()) throw not_eapnet("an input or the output is not a tensor");
  const auto s0 = in0->sizes();
  // app: frames uint8 (3, H, W, 3); float: ldrs float32 (1, 3, 3, H, W)
  if (in0->scalar_type() == ScalarType::Byte && s0.size() == 4 && s0[0] == 3 && s0[3] == 3) {
    io_ = ProgramIO::App;
    h_ = s0[1];
    w_ = s0[2];
  } else if (in0->scalar_type() == ScalarType::Float && s0.size() == 5 && s0[0] == 1 && s0[1] == 3 && s0[2] == 3) {
    io_ = ProgramIO::Float;
    h_ = s0[3];
    w_ = s0[4];
  } else {
    throw not_eapnet("input 0 has shape " + shape_text(s0) +
                     ", expected uint8 (3, H, W, 3) frames or float32 (1, 3, 3, H, W) ldrs");
  }
  const bool app = io_ == ProgramIO::App;
  const std::vector<int32_t> evs_shape = app ? std::vector<int32_t>{3} : std::vector<int32_t>{1, 3};
  const std::vector<int32_t> hdr_shape = app ? std::vector<int32_t>{h_, w_, 3} : std::vector<int32_t>{1, 3, h_, w_};
  if (in1->scalar_type() != ScalarType::Float || !shape_is(in1->sizes(), evs_shape)) {
    throw not_eapnet("input 1 has shape " + shape_text(in1->sizes()) + ", expected float32 evs " +
                     (app ? "(3,)" : "(1, 3)"));
  }
  if (out->scalar_type() != ScalarType::Float || !shape_is(out->sizes(), hdr_shape)) {
    throw not_eapnet("the output has shape " + shape_text(out->sizes()) + ", expected float32 hdr " +
                     (app ? "(H, W, 3)" : "(1, 3, H, W)"));
  }
  if (app) {
    frames_.resize(size_t(3) * h_ * w_ * 3);
    impl_->input0 = et::from_blob(frames_.data(), {3, h_, w_, 3}, ScalarType::Byte);
    impl_->input1 = et::from_blob(evs_, {3}, ScalarType::Float);
  } else {
    ldrs_.resize(size_t(9) * h_ * w_);
    impl_->input0 = et::from_blob(ldrs_.data(), {1, 3, 3, h_, w_}, ScalarType::Float);
    impl_->input1 = et::from_blob(evs_, {1, 3}, ScalarType::Float);
  }
}

HdrProgram::~HdrProgram() = default;

void HdrProgram::run(float* hdr) {
  const auto result = impl_->module.forward({EValue(impl_->input0), EValue(impl_->input1)});
  if (!result.ok()) throw ProgramError("the program's forward failed (" + error_text(result.error()) + ")");
  const auto& y = result->at(0).toTensor();
  const size_t hw = size_t(h_) * w_;
  if (size_t(y.numel()) != hw * 3) throw ProgramError("the program returned " + std::to_string(y.numel()) + " values");
  const float* src = y.const_data_ptr<float>();
  if (io_ == ProgramIO::App) {  // already (H, W, 3)
    std::memcpy(hdr, src, hw * 3 * sizeof(float));
  } else {  // (1, 3, H, W) -> (H, W, 3): a copy, no arithmetic
    for (size_t p = 0; p < hw; ++p) {
      for (size_t c = 0; c < 3; ++c) hdr[p * 3 + c] = src[c * hw + p];
    }
  }
}

int set_threads(int threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) throw ProgramError("the runtime has no thread pool (cpuinfo failed to initialise)");
  if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads))) {
    throw ProgramError("the runtime could not resize its thread pool to " + std::to_string(threads) + " threads");
  }
  return static_cast<int>(pool->get_thread_count());
}

int thread_count() {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  return pool == nullptr ? 1 : static_cast<int>(pool->get_thread_count());
}

}  // namespace eapnet
