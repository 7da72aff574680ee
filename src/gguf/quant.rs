//! Arithmetic on tensor data: scaling a tensor by a factor in place (per element for float
//! types, by the block scales for block-quantized types) and dequantizing to `f32` (to check
//! patches).
//!
//! Scaling a block type multiplies the scales each value is decoded with: every value of a block
//! is `d * q` (Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS, Q3_K, Q6_K, Q8_K: `d` scaled) or
//! `d * q + m` / `d * q - dmin * m` (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K: `d` and the min scale both
//! scaled; Q8_1 also keeps `s = d * Σq`, scaled too). The quantized integers are untouched, so
//! the result is exact up to rounding the new scale to f16 — and exact, bit for bit, for powers
//! of two that neither overflow nor underflow. A scale that would overflow f16 is refused.

use half::{bf16, f16};

use super::types::tensor_type as tt;

/// Where the scales are in a block: f16 fields at these byte offsets (and `f32_d`: Q8_K's `d`
/// is an f32 at 0).
struct Scales {
    f16_at: &'static [usize],
    f32_d: bool,
}

fn scales(type_id: u32) -> Option<Scales> {
    let f16 = |at: &'static [usize]| {
        Some(Scales {
            f16_at: at,
            f32_d: false,
        })
    };
    match type_id {
        tt::Q4_0 | tt::Q5_0 | tt::Q8_0 | tt::IQ4_NL | tt::IQ4_XS => f16(&[0]),
        tt::Q4_1 | tt::Q5_1 | tt::Q8_1 | tt::Q4_K | tt::Q5_K => f16(&[0, 2]),
        tt::Q2_K => f16(&[80, 82]),
        tt::Q3_K => f16(&[108]),
        tt::Q6_K => f16(&[208]),
        tt::Q8_K => Some(Scales {
            f16_at: &[],
            f32_d: true,
        }),
        _ => None,
    }
}

/// The types [`scale`] supports, by ggml name.
pub const SCALABLE: &str = "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q2_K, q3_K, \
                            q4_K, q5_K, q6_K, q8_K, iq4_nl, iq4_xs";

pub fn can_scale(type_id: u32) -> bool {
    matches!(type_id, tt::F32 | tt::F16 | tt::BF16) || scales(type_id).is_some()
}

/// Multiplies the tensor data `data` of type `type_id` by `factor`, in place. Errors (and
/// leaves `data` partly changed — callers work on a copy) when the type is not supported or a
/// value would overflow.
pub fn scale(type_id: u32, data: &mut [u8], factor: f32) -> Result<(), String> {
    let overflow = |i: usize| {
        format!("scaling by {factor} overflows the value at byte {i} (refused; nothing written)")
    };
    match type_id {
        tt::F32 => {
            for (i, c) in data.chunks_exact_mut(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let s = v * factor;
                if v.is_finite() && !s.is_finite() {
                    return Err(overflow(i * 4));
                }
                c.copy_from_slice(&s.to_le_bytes());
            }
            Ok(())
        }
        tt::F16 => scale_f16_at(data, 2, &[0], factor),
        tt::BF16 => {
            for (i, c) in data.chunks_exact_mut(2).enumerate() {
                let v = bf16::from_le_bytes([c[0], c[1]]);
                let s = bf16::from_f32(v.to_f32() * factor);
                if v.is_finite() && !s.is_finite() {
                    return Err(overflow(i * 2));
                }
                c.copy_from_slice(&s.to_le_bytes());
            }
            Ok(())
        }
        _ => {
            let s = scales(type_id).ok_or_else(|| {
                format!(
                    "scaling type {} is not supported (supported: {SCALABLE})",
                    super::types::type_name(type_id)
                )
            })?;
            let (_, block) = super::types::type_size(type_id).unwrap_or((1, 1));
            let block = usize::try_from(block).unwrap_or(1);
            if s.f32_d {
                for (i, c) in data.chunks_exact_mut(block).enumerate() {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    let r = v * factor;
                    if v.is_finite() && !r.is_finite() {
                        return Err(overflow(i * block));
                    }
                    c[..4].copy_from_slice(&r.to_le_bytes());
                }
                return Ok(());
            }
            scale_f16_at(data, block, s.f16_at, factor)
        }
    }
}

/// Scales the f16 fields at `at` of each `block`-byte block.
fn scale_f16_at(data: &mut [u8], block: usize, at: &[usize], factor: f32) -> Result<(), String> {
    for (i, c) in data.chunks_exact_mut(block).enumerate() {
        for &o in at {
            let (Some(&lo), Some(&hi)) = (c.get(o), c.get(o + 1)) else {
                return Err(format!("block {i} is too short"));
            };
            let v = f16::from_le_bytes([lo, hi]);
            let s = f16::from_f32(v.to_f32() * factor);
            if v.is_finite() && !s.is_finite() {
                return Err(format!(
                    "scaling by {factor} overflows f16 at byte {} (refused; nothing written)",
                    i * block + o
                ));
            }
            let b = s.to_le_bytes();
            c[o] = b[0];
            c[o + 1] = b[1];
        }
    }
    Ok(())
}

/// The types [`dequantize`] decodes, by ggml name.
pub const DEQUANTIZABLE: &str = "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K";

fn h(c: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([c[at], c[at + 1]]).to_f32()
}

/// Decodes tensor data of type `type_id` to `f32` values (as ggml's `dequantize_row_*` does);
/// `None` for a type not in [`DEQUANTIZABLE`].
pub fn dequantize(type_id: u32, data: &[u8]) -> Option<Vec<f32>> {
    let mut y = Vec::new();
    match type_id {
        tt::F32 => {
            for c in data.chunks_exact(4) {
                y.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        tt::F16 => {
            for c in data.chunks_exact(2) {
                y.push(h(c, 0));
            }
        }
        tt::BF16 => {
            for c in data.chunks_exact(2) {
                y.push(bf16::from_le_bytes([c[0], c[1]]).to_f32());
            }
        }
        tt::Q4_0 | tt::Q4_1 => {
            let (size, off) = if type_id == tt::Q4_0 {
                (18, 2)
            } else {
                (20, 4)
            };
            for c in data.chunks_exact(size) {
                let d = h(c, 0);
                let qs = &c[off..off + 16];
                let (lo, hi): (Vec<f32>, Vec<f32>) = if type_id == tt::Q4_0 {
                    (
                        qs.iter().map(|q| (f32::from(q & 0xF) - 8.0) * d).collect(),
                        qs.iter().map(|q| (f32::from(q >> 4) - 8.0) * d).collect(),
                    )
                } else {
                    let m = h(c, 2);
                    (
                        qs.iter().map(|q| f32::from(q & 0xF) * d + m).collect(),
                        qs.iter().map(|q| f32::from(q >> 4) * d + m).collect(),
                    )
                };
                y.extend(lo);
                y.extend(hi);
            }
        }
        tt::Q5_0 | tt::Q5_1 => {
            let (size, off, bias) = if type_id == tt::Q5_0 {
                (22, 2, 16.0)
            } else {
                (24, 4, 0.0)
            };
            for c in data.chunks_exact(size) {
                let d = h(c, 0);
                let m = if type_id == tt::Q5_1 { h(c, 2) } else { 0.0 };
                let qh = u32::from_le_bytes([c[off], c[off + 1], c[off + 2], c[off + 3]]);
                let qs = &c[off + 4..off + 20];
                let mut hi = [0f32; 16];
                for j in 0..16 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    let x0 = (u32::from(qs[j] & 0xF) | xh0) as f32 - bias;
                    let x1 = (u32::from(qs[j] >> 4) | xh1) as f32 - bias;
                    y.push(x0 * d + m);
                    hi[j] = x1 * d + m;
                }
                y.extend(hi);
            }
        }
        tt::Q8_0 => {
            for c in data.chunks_exact(34) {
                let d = h(c, 0);
                y.extend(c[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        tt::Q4_K | tt::Q5_K => {
            let size = if type_id == tt::Q4_K { 144 } else { 176 };
            for c in data.chunks_exact(size) {
                let d = h(c, 0);
                let min = h(c, 2);
                let sc = &c[4..16];
                let (qh, ql) = if type_id == tt::Q4_K {
                    (&c[0..0], &c[16..144])
                } else {
                    (&c[16..48], &c[48..176])
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for (k, j) in (0..256).step_by(64).enumerate() {
                    let is = k * 2;
                    let (s1, m1) = scale_min_k4(is, sc);
                    let (s2, m2) = scale_min_k4(is + 1, sc);
                    let (d1, m1) = (d * f32::from(s1), min * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), min * f32::from(m2));
                    let q = &ql[j / 2..j / 2 + 32];
                    for l in 0..32 {
                        let hb = if qh.is_empty() || qh[l] & u1 == 0 {
                            0.0
                        } else {
                            16.0
                        };
                        y.push(d1 * (f32::from(q[l] & 0xF) + hb) - m1);
                    }
                    for l in 0..32 {
                        let hb = if qh.is_empty() || qh[l] & u2 == 0 {
                            0.0
                        } else {
                            16.0
                        };
                        y.push(d2 * (f32::from(q[l] >> 4) + hb) - m2);
                    }
                    u1 = u1.wrapping_shl(2);
                    u2 = u2.wrapping_shl(2);
                }
            }
        }
        tt::Q6_K => {
            for c in data.chunks_exact(210) {
                let d = h(c, 208);
                let mut out = [0f32; 256];
                for n in 0..2 {
                    let ql = &c[n * 64..n * 64 + 64];
                    let qh = &c[128 + n * 32..128 + n * 32 + 32];
                    let sc = &c[192 + n * 8..192 + n * 8 + 8];
                    let o = &mut out[n * 128..n * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                        let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        let s = |k: usize| f32::from(sc[is + k] as i8);
                        o[l] = d * s(0) * q1 as f32;
                        o[l + 32] = d * s(2) * q2 as f32;
                        o[l + 64] = d * s(4) * q3 as f32;
                        o[l + 96] = d * s(6) * q4 as f32;
                    }
                }
                y.extend(out);
            }
        }
        _ => return None,
    }
    Some(y)
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a K-quant block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
