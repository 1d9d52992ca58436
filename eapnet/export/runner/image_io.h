// The runner's files: input frames (PPM, PNG, raw 8-bit RGB), raw float32 arrays, and the outputs
// (raw float32 HDR, the NTIRE 16-bit PNG + align ratio .npy), each written atomically.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace eapnet {

// A bad input or output file; the message names the file and the problem (the runner exits 2).
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr int kMaxSide = 16384;  // largest frame side read, pixels (as the Python readers: MAX_FRAME_SIDE)

// One 8-bit RGB frame: h x w pixels, interleaved R G B rows (h * w * 3 bytes).
struct Frame8 {
  int h = 0, w = 0;
  std::vector<uint8_t> rgb;
};

// Reads a frame, telling the format from the bytes: binary PPM (P6, maxval 255), PNG (8-bit RGB,
// non-interlaced), otherwise raw interleaved RGB bytes, which need the size (raw_h, raw_w > 0; 0 = not
// given). Throws InputError naming `path` for a missing, damaged or unsupported file.
Frame8 read_frame(const std::string& path, int raw_h, int raw_w);

// Reads exactly `count` native-endian float32 values from a raw file. Throws InputError naming `path`
// when it is missing or holds another number of bytes.
std::vector<float> read_f32(const std::string& path, size_t count);

// Writes `bytes` to `path` through a temporary file in the same folder, renamed over it when complete,
// so a reader never sees a half-written file. Throws std::runtime_error naming `path` if it cannot.
void write_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

// The bytes of a raw float32 file (native endian) holding `values`.
std::vector<uint8_t> f32_bytes(const std::vector<float>& values);

// The NTIRE HDR format (eapnet/data/ntire.py: write_ntire_hdr, the organisers' imwrite_uint16_png):
// align = 65535 / max(hdr) in double precision and png = round(hdr * align) (half to even, as NumPy),
// clipped to [0, 65535]. `hdr` is h * w * 3 floats, interleaved RGB. Throws std::runtime_error when
// there is no align ratio (max <= 0) or a value is NaN/inf.
struct Hdr16 {
  double align = 0;              // HDR = png / align
  std::vector<uint16_t> png;     // h * w * 3 samples, interleaved RGB
};
Hdr16 quantize_hdr16(const std::vector<float>& hdr);

// The bytes of a NumPy .npy file (format 1.0) holding one 0-d float64: how the NTIRE align ratio is
// stored (write_ntire_hdr, and the challenge's own files).
std::vector<uint8_t> npy_scalar_f64(double value);

}  // namespace eapnet
