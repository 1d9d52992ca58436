// An EAPNet ExecuTorch program (.pte) of fixed size, in either input convention of
// eapnet/export/common.py:
//   float (research): ldrs float32 (1, 3, 3, H, W) in [0, 1] (frame, channel, row, col), evs float32 (1, 3);
//                     hdr float32 (1, 3, H, W);
//   app:              frames uint8 (3, H, W, 3) (short, medium, long interleaved RGB), evs float32 (3,);
//                     hdr float32 (H, W, 3).
// The convention is told from the method's metadata (input 0: uint8 of rank 4 = app, float32 of rank 5 =
// float). The program reads its inputs from buffers this class owns, so a caller fills them in place.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace eapnet {

// The program cannot be loaded or run; the message says why (the runner exits 1).
struct ProgramError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class ProgramIO { Float, App };

class HdrProgram {
 public:
  // Loads `path` and its "forward" method (XNNPACK delegate init included). Throws std::invalid_argument
  // for a file that is not an EAPNet program of either convention (or is damaged, truncated), ProgramError
  // when the runtime fails.
  explicit HdrProgram(const std::string& path);
  ~HdrProgram();
  HdrProgram(const HdrProgram&) = delete;
  HdrProgram& operator=(const HdrProgram&) = delete;

  int height() const { return h_; }  // the fixed input size, pixels
  int width() const { return w_; }
  ProgramIO io() const { return io_; }

  // Input buffers, filled by the caller before run():
  uint8_t* frames() { return frames_.data(); }  // app: 3 * H * W * 3 codes (frame, row, col, channel)
  float* ldrs() { return ldrs_.data(); }        // float: 3 * 3 * H * W values (frame, channel, row, col)
  float* evs() { return evs_; }                 // both: 3 exposure values, stops relative to the medium frame

  // One forward; writes the HDR as H * W * 3 floats, interleaved RGB rows, whatever the program's layout.
  void run(float* hdr);

 private:
  struct Impl;  // the ExecuTorch module and input tensors: kept out of this header
  std::unique_ptr<Impl> impl_;
  int h_ = 0, w_ = 0;
  ProgramIO io_ = ProgramIO::Float;
  std::vector<uint8_t> frames_;
  std::vector<float> ldrs_;
  float evs_[3] = {0, 0, 0};
};

// Routes the runtime's log to stderr keeping only errors (kError, kFatal), each as one line
// "executorch: E file:line message"; with `verbose`, every message. Call before anything else.
void route_runtime_log(bool verbose);

// Sets the XNNPACK thread pool to `threads` threads (> 0). Returns the pool's size after the call.
int set_threads(int threads);
// The thread pool's current size.
int thread_count();

}  // namespace eapnet
