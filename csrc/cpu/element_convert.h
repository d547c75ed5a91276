#pragma once
// Loads and stores between the tensor dtypes and their float accumulation type, written so the
// compiler vectorizes them inside the engine's loops (c10::Half and c10::BFloat16's own
// conversions branch on NaN and stay scalar). Rounding equals c10's: round to nearest even;
// NaN stays NaN.

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <bit>
#include <cstdint>

namespace fusedloss {
namespace cpu {

inline float load_as_acc(float v) { return v; }
inline double load_as_acc(double v) { return v; }

inline float load_as_acc(c10::BFloat16 v) {
  return std::bit_cast<float>(static_cast<uint32_t>(v.x) << 16);
}

template <typename T>
inline T store_from_acc(float v);
template <typename T>
inline T store_from_acc(double v);

template <>
inline float store_from_acc<float>(float v) {
  return v;
}
template <>
inline double store_from_acc<double>(double v) {
  return v;
}

template <>
inline c10::BFloat16 store_from_acc<c10::BFloat16>(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  c10::BFloat16 out;
  out.x = static_cast<uint16_t>(v != v ? 0x7FC0u : rounded);  // NaN: a quiet NaN, as c10
  return out;
}

// IEEE half <-> float with integer and float arithmetic only (the branch-free method of the FP16
// library that c10 also uses), so it vectorizes on any x86-64 and gives c10's exact results.
inline float load_as_acc(c10::Half v) {
  const uint32_t w = static_cast<uint32_t>(v.x) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal numbers, inf and NaN: move the exponent into place and rescale.
  const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  // Subnormal halves: build 0.5 + m * 2^-24 and subtract 0.5 (exact, and immune to DAZ).
  const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? std::bit_cast<uint32_t>(denormalized)
                                                : std::bit_cast<uint32_t>(normalized);
  return std::bit_cast<float>(sign | magnitude);
}

template <>
inline c10::Half store_from_acc<c10::Half>(float v) {
  // Scaling up then down lets the FPU round to nearest even at half precision and overflow to inf.
  float base = (__builtin_fabsf(v) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = std::bit_cast<uint32_t>(v);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = std::bit_cast<uint32_t>(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  c10::Half out;
  out.x = static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
  return out;
}

}  // namespace cpu
}  // namespace fusedloss
