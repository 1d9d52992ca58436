// PNG decode (8-bit RGB) and encode (16-bit RGB): see png.h.
#include "png.h"

#include <array>
#include <cstdlib>
#include <cstring>

namespace eapnet {

namespace {

const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

// ------------------------------------------------------------------------------------------------
// Inflate (RFC 1951)
// ------------------------------------------------------------------------------------------------

// Reads the deflate stream's bits, least significant bit of each byte first.
class BitReader {
 public:
  BitReader(const uint8_t* data, size_t n) : data_(data), n_(n) {}

  // The next `count` bits (count <= 24) as an integer, the first bit read in bit 0.
  uint32_t bits(int count) {
    while (have_ < count) {
      if (pos_ >= n_) throw FormatError("the compressed image data ends early (truncated file?)");
      buf_ |= uint32_t{data_[pos_++]} << have_;
      have_ += 8;
    }
    const uint32_t v = buf_ & ((uint32_t{1} << count) - 1);
    buf_ >>= count;
    have_ -= count;
    return v;
  }

  // Drops the bits left in the current byte (stored blocks start on a byte boundary).
  void align() {
    buf_ = 0;
    have_ = 0;
  }

  // Copies `count` whole bytes (after align()).
  void bytes(size_t count, std::vector<uint8_t>& out) {
    if (count > n_ - pos_) throw FormatError("a stored deflate block runs past the end of the data");
    out.insert(out.end(), data_ + pos_, data_ + pos_ + count);
    pos_ += count;
  }

  size_t position() const { return pos_; }  // bytes consumed (whole bytes once aligned)

 private:
  const uint8_t* data_;
  size_t n_;
  size_t pos_ = 0;
  uint32_t buf_ = 0;  // bits read ahead, next bit in bit 0
  int have_ = 0;      // how many
};

constexpr int kMaxBits = 15;  // longest deflate code

// A canonical Huffman code: how many codes of each length, and the symbols ordered by (length, value).
struct Huffman {
  std::array<uint16_t, kMaxBits + 1> count{};
  std::vector<uint16_t> symbol;

  // From the code length of each symbol (0 = unused). An over-subscribed set of lengths is an error;
  // an incomplete one is allowed (deflate uses it for a single distance code) and fails only if a
  // missing code is read.
  explicit Huffman(const std::vector<uint8_t>& lengths) : symbol(lengths.size()) {
    for (uint8_t len : lengths) ++count[len];
    int left = 1;  // codes of the current length still unassigned
    for (int len = 1; len <= kMaxBits; ++len) {
      left = 2 * left - count[len];
      if (left < 0) throw FormatError("a Huffman table of the compressed data is over-subscribed");
    }
    std::array<uint16_t, kMaxBits + 2> offset{};  // first index of each length in `symbol`
    for (int len = 1; len <= kMaxBits; ++len) offset[len + 1] = offset[len] + count[len];
    for (size_t s = 0; s < lengths.size(); ++s) {
      if (lengths[s] != 0) symbol[offset[lengths[s]]++] = static_cast<uint16_t>(s);
    }
  }

  // Decodes one symbol, one bit at a time (codes are stored most significant bit first).
  int decode(BitReader& in) const {
    int code = 0, first = 0, index = 0;  // code read so far, first code of this length, its index
    for (int len = 1; len <= kMaxBits; ++len) {
      code |= static_cast<int>(in.bits(1));
      const int n = count[len];
      if (code - first < n) return symbol[index + code - first];
      index += n;
      first = (first + n) << 1;
      code <<= 1;
    }
    throw FormatError("the compressed data holds a code its Huffman table does not define");
  }
};

// Lengths 257..285 and distances 0..29: base values and extra bits (RFC 1951, 3.2.5).
const uint16_t kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                  31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
const uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
const uint16_t kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
const uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

// One Huffman-coded block: literals and (length, distance) back-references until the end code 256.
void inflate_codes(BitReader& in, const Huffman& lit, const Huffman& dist, std::vector<uint8_t>& out, size_t max_out) {
  for (;;) {
    const int sym = lit.decode(in);
    if (sym < 256) {
      if (out.size() >= max_out) throw FormatError("the compressed data holds more than the image size");
      out.push_back(static_cast<uint8_t>(sym));
    } else if (sym == 256) {
      return;
    } else {
      if (sym > 285) throw FormatError("the compressed data holds an invalid length code");
      const size_t len = kLengthBase[sym - 257] + in.bits(kLengthExtra[sym - 257]);
      const int dsym = dist.decode(in);
      if (dsym > 29) throw FormatError("the compressed data holds an invalid distance code");
      const size_t d = kDistBase[dsym] + in.bits(kDistExtra[dsym]);
      if (d > out.size()) throw FormatError("the compressed data refers back before its start");
      if (len > max_out - out.size()) throw FormatError("the compressed data holds more than the image size");
      for (size_t k = 0; k < len; ++k) out.push_back(out[out.size() - d]);  // may overlap itself
    }
  }
}

// The code lengths of a dynamic block (RFC 1951, 3.2.7), then its codes.
void inflate_dynamic(BitReader& in, std::vector<uint8_t>& out, size_t max_out) {
  static const uint8_t kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  const size_t nlit = in.bits(5) + 257, ndist = in.bits(5) + 1, ncode = in.bits(4) + 4;
  if (nlit > 286 || ndist > 30) throw FormatError("a dynamic deflate block declares too many codes");
  std::vector<uint8_t> code_lengths(19, 0);
  for (size_t k = 0; k < ncode; ++k) code_lengths[kOrder[k]] = static_cast<uint8_t>(in.bits(3));
  const Huffman lencode(code_lengths);
  std::vector<uint8_t> lengths;  // literal/length code lengths, then distance ones
  while (lengths.size() < nlit + ndist) {
    const int sym = lencode.decode(in);
    if (sym < 16) {
      lengths.push_back(static_cast<uint8_t>(sym));
      continue;
    }
    uint8_t value = 0;
    size_t repeat = 0;
    if (sym == 16) {  // the previous length, 3-6 times
      if (lengths.empty()) throw FormatError("a dynamic deflate block repeats a length before the first");
      value = lengths.back();
      repeat = 3 + in.bits(2);
    } else if (sym == 17) {  // zero, 3-10 times
      repeat = 3 + in.bits(3);
    } else {  // zero, 11-138 times
      repeat = 11 + in.bits(7);
    }
    if (lengths.size() + repeat > nlit + ndist) throw FormatError("a dynamic deflate block's lengths overrun");
    lengths.insert(lengths.end(), repeat, value);
  }
  if (lengths[256] == 0) throw FormatError("a dynamic deflate block has no end-of-block code");
  const Huffman lit(std::vector<uint8_t>(lengths.begin(), lengths.begin() + nlit));
  const Huffman dist(std::vector<uint8_t>(lengths.begin() + nlit, lengths.end()));
  inflate_codes(in, lit, dist, out, max_out);
}

// The fixed codes of RFC 1951, 3.2.6.
void inflate_fixed(BitReader& in, std::vector<uint8_t>& out, size_t max_out) {
  static const Huffman lit = [] {
    std::vector<uint8_t> l(288);
    for (int s = 0; s < 288; ++s) l[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    return Huffman(l);
  }();
  static const Huffman dist(std::vector<uint8_t>(30, 5));
  inflate_codes(in, lit, dist, out, max_out);
}

// Paeth predictor of the PNG filter type 4.
uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return static_cast<uint8_t>(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

void put_chunk(std::vector<uint8_t>& png, const char* type, const std::vector<uint8_t>& payload) {
  put_be32(png, static_cast<uint32_t>(payload.size()));
  const size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), payload.begin(), payload.end());
  put_be32(png, crc32(&png[start], png.size() - start));  // over type and payload
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t k = 0; k < 256; ++k) {
      uint32_t c = k;
      for (int b = 0; b < 8; ++b) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[k] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t k = 0; k < n; ++k) crc = table[(crc ^ data[k]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32(const uint8_t* data, size_t n, uint32_t adler) {
  constexpr uint32_t kMod = 65521;
  uint32_t a = adler & 0xffff, b = adler >> 16;
  while (n > 0) {
    const size_t run = n < 5552 ? n : 5552;  // the most bytes before b could overflow 32 bits
    for (size_t k = 0; k < run; ++k) {
      a += data[k];
      b += a;
    }
    a %= kMod;
    b %= kMod;
    data += run;
    n -= run;
  }
  return (b << 16) | a;
}

std::vector<uint8_t> zlib_inflate(const uint8_t* data, size_t n, size_t max_out) {
  if (n < 6) throw FormatError("the compressed image data is too short to be a zlib stream");
  const uint8_t cmf = data[0], flg = data[1];
  if ((cmf & 0x0f) != 8 || (cmf >> 4) > 7 || ((cmf << 8) | flg) % 31 != 0 || (flg & 0x20)) {
    throw FormatError("the image data is not a zlib deflate stream (bad header)");
  }
  BitReader in(data + 2, n - 2);
  std::vector<uint8_t> out;
  out.reserve(max_out);
  bool last = false;
  while (!last) {
    last = in.bits(1) != 0;
    const uint32_t type = in.bits(2);
    if (type == 0) {  // stored: LEN, its complement NLEN, then LEN raw bytes
      in.align();
      const uint32_t len = in.bits(16), nlen = in.bits(16);
      if ((len ^ 0xffff) != nlen) throw FormatError("a stored deflate block's length check fails");
      if (len > max_out - out.size()) throw FormatError("the compressed data holds more than the image size");
      in.bytes(len, out);
    } else if (type == 1) {
      inflate_fixed(in, out, max_out);
    } else if (type == 2) {
      inflate_dynamic(in, out, max_out);
    } else {
      throw FormatError("the compressed data holds an invalid deflate block type");
    }
  }
  in.align();
  const size_t end = 2 + in.position();
  if (end + 4 > n) throw FormatError("the zlib stream's checksum is missing (truncated data)");
  if (read_be32(data + end) != adler32(out.data(), out.size())) {
    throw FormatError("the image data fails its zlib checksum (damaged file)");
  }
  return out;
}

bool is_png(const uint8_t* data, size_t n) { return n >= 8 && std::memcmp(data, kSignature, 8) == 0; }

std::vector<uint8_t> decode_png_rgb8(const uint8_t* data, size_t n, int& h, int& w, int max_side) {
  if (!is_png(data, n)) throw FormatError("not a PNG file");
  std::vector<uint8_t> idat;  // the concatenated IDAT payloads: one zlib stream
  bool have_header = false, have_end = false;
  for (size_t pos = 8; pos < n && !have_end;) {
    if (n - pos < 12) throw FormatError("truncated: a chunk header is cut off at byte " + std::to_string(pos));
    const uint32_t len = read_be32(data + pos);
    const std::string type(reinterpret_cast<const char*>(data + pos + 4), 4);
    if (len > n - pos - 12) {
      throw FormatError("truncated: chunk " + type + " at byte " + std::to_string(pos) + " is cut off");
    }
    const uint8_t* body = data + pos + 8;
    if (read_be32(body + len) != crc32(data + pos + 4, len + 4)) {
      throw FormatError("chunk " + type + " at byte " + std::to_string(pos) + " fails its CRC (damaged bytes)");
    }
    if (!have_header && type != "IHDR") throw FormatError("the first chunk is " + type + ", not IHDR");
    if (type == "IHDR") {
      if (len != 13) throw FormatError("the IHDR chunk has " + std::to_string(len) + " bytes, not 13");
      const uint32_t width = read_be32(body), height = read_be32(body + 4);
      const int depth = body[8], colour = body[9], interlace = body[12];
      if (depth != 8 || colour != 2) {
        throw FormatError("a " + std::to_string(depth) + "-bit PNG of colour type " + std::to_string(colour) +
                          "; the runner reads 8-bit RGB PNGs (colour type 2, no alpha)");
      }
      if (body[10] != 0 || body[11] != 0) throw FormatError("unknown PNG compression or filter method");
      if (interlace != 0) throw FormatError("an interlaced PNG; the runner reads non-interlaced PNGs");
      if (width < 1 || height < 1 || width > uint32_t(max_side) || height > uint32_t(max_side)) {
        throw FormatError("the PNG claims " + std::to_string(height) + "x" + std::to_string(width) +
                          " pixels (HxW); frames are 1 to " + std::to_string(max_side) + " pixels a side");
      }
      h = static_cast<int>(height);
      w = static_cast<int>(width);
      have_header = true;
    } else if (type == "IDAT") {
      idat.insert(idat.end(), body, body + len);
    } else if (type == "IEND") {
      have_end = true;
    } else if (!(type[0] & 0x20) && type != "PLTE") {  // an unknown critical chunk changes the meaning
      throw FormatError("unknown critical PNG chunk " + type);
    }  // ancillary chunks (gAMA, sRGB, text, ...) carry nothing the pixels need
    pos += 12 + len;
  }
  if (!have_end) throw FormatError("truncated: no IEND chunk");
  if (idat.empty()) throw FormatError("the PNG holds no image data (no IDAT chunk)");

  const size_t stride = size_t(w) * 3;  // bytes per row; 3 bytes per pixel (the filters' "bpp")
  const std::vector<uint8_t> raw = zlib_inflate(idat.data(), idat.size(), size_t(h) * (stride + 1));
  if (raw.size() != size_t(h) * (stride + 1)) {
    throw FormatError("the image data holds " + std::to_string(raw.size()) + " bytes, a " + std::to_string(h) + "x" +
                      std::to_string(w) + " RGB image needs " + std::to_string(size_t(h) * (stride + 1)));
  }
  std::vector<uint8_t> rgb(size_t(h) * stride);
  for (size_t y = 0; y < size_t(h); ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* src = &raw[y * (stride + 1) + 1];
    uint8_t* row = &rgb[y * stride];
    const uint8_t* up = y > 0 ? row - stride : nullptr;  // the row above, already reconstructed
    for (size_t k = 0; k < stride; ++k) {
      const int a = k >= 3 ? row[k - 3] : 0, b = up ? up[k] : 0, c = (up && k >= 3) ? up[k - 3] : 0;
      int pred = 0;
      switch (filter) {
        case 0: pred = 0; break;                 // None
        case 1: pred = a; break;                 // Sub
        case 2: pred = b; break;                 // Up
        case 3: pred = (a + b) / 2; break;       // Average
        case 4: pred = paeth(a, b, c); break;    // Paeth
        default:
          throw FormatError("row " + std::to_string(y) + " has an unknown PNG filter type " + std::to_string(filter));
      }
      row[k] = static_cast<uint8_t>(src[k] + pred);
    }
  }
  return rgb;
}

std::vector<uint8_t> encode_png_rgb16(const uint16_t* rgb, int h, int w) {
  // Raw scanlines: filter byte 0 (None), then the row's samples big-endian.
  const size_t stride = size_t(w) * 6 + 1;
  std::vector<uint8_t> raw(size_t(h) * stride);
  for (size_t y = 0; y < size_t(h); ++y) {
    uint8_t* row = &raw[y * stride];
    row[0] = 0;
    for (size_t k = 0; k < size_t(w) * 3; ++k) {
      const uint16_t v = rgb[y * size_t(w) * 3 + k];
      row[1 + 2 * k] = static_cast<uint8_t>(v >> 8);
      row[2 + 2 * k] = static_cast<uint8_t>(v & 0xff);
    }
  }
  // zlib stream: header (deflate, 32 KiB window, no preset dictionary, fastest), stored blocks of at most
  // 65535 bytes (1 header byte BFINAL/BTYPE=00, LEN, NLEN little-endian, the bytes), Adler-32 big-endian.
  std::vector<uint8_t> z = {0x78, 0x01};
  z.reserve(raw.size() + raw.size() / 65535 * 5 + 16);
  size_t pos = 0;
  do {
    const size_t len = raw.size() - pos < 65535 ? raw.size() - pos : 65535;
    const bool final = pos + len == raw.size();
    z.push_back(final ? 1 : 0);
    z.push_back(static_cast<uint8_t>(len & 0xff));
    z.push_back(static_cast<uint8_t>(len >> 8));
    z.push_back(static_cast<uint8_t>(~len & 0xff));
    z.push_back(static_cast<uint8_t>((~len >> 8) & 0xff));
    z.insert(z.end(), raw.begin() + pos, raw.begin() + pos + len);
    pos += len;
  } while (pos < raw.size());
  put_be32(z, adler32(raw.data(), raw.size()));

  std::vector<uint8_t> header;
  put_be32(header, static_cast<uint32_t>(w));
  put_be32(header, static_cast<uint32_t>(h));
  header.insert(header.end(), {16, 2, 0, 0, 0});  // 16-bit, truecolour RGB, deflate, adaptive filters, no interlace
  std::vector<uint8_t> png(kSignature, kSignature + 8);
  put_chunk(png, "IHDR", header);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", {});
  return png;
}

}  // namespace eapnet
