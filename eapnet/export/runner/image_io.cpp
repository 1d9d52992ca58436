// The runner's file formats: see image_io.h.
#include "image_io.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "png.h"

namespace eapnet {

namespace {

std::string size_text(long long h, long long w) { return std::to_string(h) + "x" + std::to_string(w); }

std::vector<uint8_t> read_all(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the " + what + " (" + std::strerror(errno) + ")");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Binary PPM: "P6", width, height, maxval as ASCII decimals separated by whitespace (and '#' comments to
// the end of a line), one whitespace byte, then width * height RGB triplets.
Frame8 parse_ppm(const std::string& path, const std::vector<uint8_t>& bytes) {
  size_t pos = 2;  // after "P6"
  const auto number = [&](const char* what) {
    for (;;) {  // whitespace and comments before the field
      while (pos < bytes.size() && std::isspace(bytes[pos])) ++pos;
      if (pos < bytes.size() && bytes[pos] == '#') {
        while (pos < bytes.size() && bytes[pos] != '\n') ++pos;
      } else {
        break;
      }
    }
    long long v = 0;
    const size_t start = pos;
    while (pos < bytes.size() && std::isdigit(bytes[pos])) {
      v = std::min(v * 10 + (bytes[pos++] - '0'), 1LL << 40);  // saturates: any huge value is refused below
    }
    if (pos == start) throw InputError(path + ": damaged PPM header (no " + what + ")");
    return v;
  };
  const long long w = number("width"), h = number("height"), maxval = number("maxval");
  if (pos >= bytes.size() || !std::isspace(bytes[pos])) throw InputError(path + ": damaged PPM header");
  ++pos;  // the single whitespace byte before the pixels
  if (maxval != 255) {
    throw InputError(path + ": a PPM with maxval " + std::to_string(maxval) +
                     "; the runner reads 8-bit PPMs (maxval 255)");
  }
  if (w < 1 || h < 1 || w > kMaxSide || h > kMaxSide) {
    throw InputError(path + ": the PPM claims " + size_text(h, w) + " pixels (HxW); frames are 1 to " +
                     std::to_string(kMaxSide) + " pixels a side");
  }
  const size_t need = size_t(h) * size_t(w) * 3, have = bytes.size() - pos;
  if (have != need) {
    throw InputError(path + ": the " + size_text(h, w) + " PPM needs " + std::to_string(need) +
                     " pixel bytes, the file has " + std::to_string(have) +
                     (have < need ? " (truncated)" : " (extra data after the image)"));
  }
  return Frame8{int(h), int(w), std::vector<uint8_t>(bytes.begin() + pos, bytes.end())};
}

}  // namespace

Frame8 read_frame(const std::string& path, int raw_h, int raw_w) {
  const std::vector<uint8_t> bytes = read_all(path, "frame");
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == '6') return parse_ppm(path, bytes);
  if (is_png(bytes.data(), bytes.size())) {
    Frame8 f;
    try {
      f.rgb = decode_png_rgb8(bytes.data(), bytes.size(), f.h, f.w, kMaxSide);
    } catch (const FormatError& e) {
      throw InputError(path + ": " + e.what());
    }
    return f;
  }
  if (raw_h <= 0 || raw_w <= 0) {
    throw InputError(path + ": neither a PPM (P6) nor a PNG file; a raw 8-bit RGB frame needs --size HxW");
  }
  const size_t need = size_t(raw_h) * size_t(raw_w) * 3;
  if (bytes.size() != need) {
    throw InputError(path + ": a raw " + size_text(raw_h, raw_w) + " RGB frame (--size) has " + std::to_string(need) +
                     " bytes, the file has " + std::to_string(bytes.size()));
  }
  return Frame8{raw_h, raw_w, bytes};
}

std::vector<float> read_f32(const std::string& path, size_t count) {
  const std::vector<uint8_t> bytes = read_all(path, "float32 input");
  if (bytes.size() != count * sizeof(float)) {
    throw InputError(path + ": expected " + std::to_string(count) + " float32 values (" +
                     std::to_string(count * sizeof(float)) + " bytes), the file has " + std::to_string(bytes.size()) +
                     " bytes");
  }
  std::vector<float> values(count);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

void write_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  // A dot-name beside the target (same file system, so rename is atomic), unique to this process.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string tmp = dir + "." + path.substr(dir.size()) + ".tmp" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot write the output (" + std::strerror(errno) + ")");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int why = ok ? errno : err;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": writing the output failed (" + std::strerror(why) + ")");
  }
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

Hdr16 quantize_hdr16(const std::vector<float>& hdr) {
  double peak = 0;
  for (float v : hdr) {
    if (!std::isfinite(v)) throw std::runtime_error("the HDR holds NaN/inf values; no 16-bit PNG can be written");
    peak = std::fmax(peak, double(v));
  }
  if (peak <= 0) throw std::runtime_error("the HDR is all zero or negative; it has no align ratio");
  Hdr16 out;
  out.align = 65535.0 / peak;
  out.png.resize(hdr.size());
  for (size_t k = 0; k < hdr.size(); ++k) {
    const double q = std::nearbyint(double(hdr[k]) * out.align);  // default rounding mode: half to even
    out.png[k] = static_cast<uint16_t>(std::fmin(std::fmax(q, 0.0), 65535.0));
  }
  return out;
}

std::vector<uint8_t> npy_scalar_f64(double value) {
  // Magic, version 1.0, header length (little-endian uint16), then the header dict padded with spaces
  // and ended by '\n' so that the data starts at a multiple of 64 bytes: what numpy.save writes.
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }";
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::vector<uint8_t> bytes = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  bytes.push_back(static_cast<uint8_t>(header.size() & 0xff));
  bytes.push_back(static_cast<uint8_t>(header.size() >> 8));
  bytes.insert(bytes.end(), header.begin(), header.end());
  uint8_t data[8];
  std::memcpy(data, &value, 8);  // little-endian on every target of the runner (x86-64, aarch64)
  bytes.insert(bytes.end(), data, data + 8);
  return bytes;
}

}  // namespace eapnet
