// Minimal PNG support for the runner, written for it (no third-party code):
//  - decode 8-bit RGB, non-interlaced PNGs (what cameras' and the NTIRE challenge's LDR frames are),
//    with an inflate (RFC 1950 zlib + RFC 1951 deflate: stored, fixed and dynamic Huffman blocks) and the
//    five PNG row filters;
//  - encode 16-bit RGB PNGs (the NTIRE HDR format) as stored (uncompressed) deflate blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace eapnet {

// A file that is not what the runner can read; the message names the problem (the caller adds the file).
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// CRC-32 (ISO 3309, as PNG chunks use) of n bytes, continuing from `crc` (0 to start).
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

// Adler-32 (RFC 1950, the zlib stream checksum) of n bytes, continuing from `adler` (1 to start).
uint32_t adler32(const uint8_t* data, size_t n, uint32_t adler = 1);

// Decompresses a zlib stream (RFC 1950) whose content is at most `max_out` bytes. Throws FormatError
// for a damaged stream, a wrong checksum or more output than max_out (a size the caller knows).
std::vector<uint8_t> zlib_inflate(const uint8_t* data, size_t n, size_t max_out);

// True when the bytes start with the PNG signature.
bool is_png(const uint8_t* data, size_t n);

// Decodes an 8-bit RGB non-interlaced PNG into h * w * 3 bytes (interleaved RGB rows, the file's own
// sample order). Throws FormatError naming the problem for a damaged file or another kind of PNG
// (bit depth, colour type, interlacing), or a side above max_side pixels.
std::vector<uint8_t> decode_png_rgb8(const uint8_t* data, size_t n, int& h, int& w, int max_side);

// Encodes h x w 16-bit RGB samples (interleaved rows, R G B order as the PNG file stores them) as a PNG.
std::vector<uint8_t> encode_png_rgb16(const uint16_t* rgb, int h, int w);

}  // namespace eapnet
