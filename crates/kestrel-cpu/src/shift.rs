//! Camera-motion compensation for convolutional caching: when the whole scene moved by
//! `(dx, dy)` input pixels (a pan), every cached activation whose cumulative stride divides the
//! motion is moved by the same amount in its own positions, so the next cached run recomputes
//! only what the motion uncovered instead of everything.
//!
//! Correctness: a stride-`s` position `p` of a convolution chain reads input pixels around
//! `p * s`; if the input content moves by a multiple of `s`, the value moves with it, except
//! where a window touches the image border in one frame and not in the other. The caller (the
//! stream) marks the uncovered band and the far border column of the input dirty; dirty-region
//! propagation then reaches every position whose computation involved the border at any layer
//! (windows are contiguous without dilation, so a window reaching past the border includes the
//! border position). Plans with dilated windows are therefore not shifted. A value whose stride
//! does not divide the motion, or that depends on the whole image (global pooling, FC, anything
//! without a tracked stride), is recomputed.

use crate::cached::{spatial, CacheState};
use crate::plan::Kernel;
use crate::CpuPlan;
use kestrel_core::ops::Op;

impl CpuPlan {
    /// The cumulative stride (input pixels per position, equal on both spatial axes) of every
    /// value computed from the graph inputs by stride-tracking steps (2-D convolutions and
    /// pooling, position-wise steps, layout-keeping views); `None` for the rest.
    pub fn value_strides(&self) -> Vec<Option<usize>> {
        let g = self.graph();
        let shape = |v: usize| g.values[v].fact.as_ref().map(|f| f.shape.clone());
        let mut s: Vec<Option<usize>> = vec![None; g.values.len()];
        for gi in &g.inputs {
            if shape(gi.value).is_some_and(|sh| spatial(&sh).is_some()) {
                s[gi.value] = Some(1);
            }
        }
        for step in &self.steps {
            let out_sp = shape(step.outputs[0]).and_then(|sh| spatial(&sh));
            let first = step.inputs.first().copied().flatten().and_then(|v| s[v]);
            let windowed = |stride: [usize; 3], rank: usize, batch: usize| {
                (rank == 2 && batch == 1 && stride[1] == stride[2])
                    .then_some(())
                    .and(first)
                    .map(|x| x * stride[1])
            };
            let positionwise = || {
                // every non-constant input laid out like the output, all with one stride
                let mut acc = None;
                for v in step.inputs.iter().flatten() {
                    if g.constant(*v).is_some() {
                        continue;
                    }
                    let same = out_sp.is_some() && shape(*v).and_then(|sh| spatial(&sh)) == out_sp;
                    match (same, s[*v], acc) {
                        (true, Some(x), None) => acc = Some(x),
                        (true, Some(x), Some(a)) if a == x => {}
                        _ => return None,
                    }
                }
                acc
            };
            let out = match &step.kernel {
                Kernel::Conv(pc) => windowed(pc.geom.stride, pc.geom.spatial_rank, pc.geom.batch),
                Kernel::Pool(pp) => windowed(pp.geom.stride, pp.geom.spatial_rank, pp.geom.batch),
                Kernel::Unary(_)
                | Kernel::Binary(_)
                | Kernel::ChannelPRelu { .. }
                | Kernel::Concat { .. } => positionwise(),
                Kernel::Reference(
                    Op::PRelu | Op::BatchNorm { .. } | Op::Clip | Op::Unary(_) | Op::Binary(_),
                ) => positionwise(),
                Kernel::Reference(Op::Softmax {
                    axis: 1 | -3,
                    legacy: false,
                }) => positionwise(),
                Kernel::View => {
                    let in_sp = step
                        .inputs
                        .first()
                        .copied()
                        .flatten()
                        .and_then(shape)
                        .and_then(|sh| spatial(&sh));
                    (in_sp.is_some() && in_sp == out_sp)
                        .then_some(())
                        .and(first)
                }
                _ => None,
            };
            for &o in &step.outputs {
                s[o] = out;
            }
        }
        s
    }

    /// Whether [`CpuPlan::shift_cache`] can be used: no window of the plan is dilated.
    pub fn supports_motion(&self) -> bool {
        self.steps.iter().all(|st| match &st.kernel {
            Kernel::Conv(pc) => pc.geom.dilation.iter().all(|&d| d == 1),
            Kernel::Pool(pp) => pp.geom.dilation.iter().all(|&d| d == 1),
            _ => true,
        })
    }

    /// The values a cached run would have to recompute after the scene moved by `(dx, dy)`
    /// input pixels: computed values whose stride does not divide the motion or is not tracked.
    /// `None` for plans with dilated windows (no motion compensation).
    pub fn motion_forced(&self, dx: isize, dy: isize) -> Option<Vec<bool>> {
        if !self.supports_motion() {
            return None;
        }
        let g = self.graph();
        let is_input = |v: usize| g.inputs.iter().any(|gi| gi.value == v);
        Some(
            self.value_strides()
                .iter()
                .enumerate()
                .map(|(v, s)| {
                    g.constant(v).is_none()
                        && !is_input(v)
                        && !s.is_some_and(|s| dx % s as isize == 0 && dy % s as isize == 0)
                })
                .collect(),
        )
    }

    /// Moves every cached value by the scene motion `(dx, dy)` (input pixels; content at `x` in
    /// the old frame is at `x + dx` in the new one). Values whose stride does not divide the
    /// motion are marked for recomputation on the next cached run ([`CpuPlan::motion_forced`]).
    /// Graph inputs are not touched (the caller hands the shifted reference to the next run).
    /// Returns false, and changes nothing, for a cold cache or a plan with dilated windows.
    pub fn shift_cache(&self, cache: &mut CacheState, dx: isize, dy: isize) -> bool {
        if !cache.is_warm() {
            return false;
        }
        let Some(mut forced) = self.motion_forced(dx, dy) else {
            return false;
        };
        let strides = self.value_strides();
        for (v, f) in forced.iter_mut().enumerate() {
            if *f {
                continue;
            }
            let Some(t) = cache.value_mut(v) else {
                continue;
            };
            let dims = spatial(t.shape());
            match (strides[v], dims, t.as_f32_mut()) {
                (Some(s), Some((h, w)), Ok(x)) => {
                    use rayon::prelude::*;
                    let (sx, sy) = (dx / s as isize, dy / s as isize);
                    self.pool.install(|| {
                        x.par_chunks_mut((h * w).max(1))
                            .for_each(|p| shift_planes(p, h, w, sx, sy))
                    });
                }
                // a constant or graph input (never forced, never shifted here)
                (None, ..) => {}
                // not an f32 NCHW tensor after all: recompute it
                _ => *f = true,
            }
        }
        cache.forced = forced;
        true
    }
}

/// Moves every `h` x `w` plane of `x` by `(sx, sy)` positions: `new[y][x] = old[y - sy][x - sx]`;
/// positions with no source become 0 (they are recomputed).
pub fn shift_planes(x: &mut [f32], h: usize, w: usize, sx: isize, sy: isize) {
    if h == 0 || w == 0 {
        return;
    }
    let (hi, wi) = (h as isize, w as isize);
    if sx.abs() >= wi || sy.abs() >= hi {
        x.fill(0.0);
        return;
    }
    let n = (w as isize - sx.abs()) as usize;
    let (src_x, dst_x) = if sx >= 0 {
        (0, sx as usize)
    } else {
        ((-sx) as usize, 0)
    };
    for plane in x.chunks_mut(h * w) {
        // rows in an order that never overwrites a row before it is read
        let rows: Box<dyn Iterator<Item = usize>> = if sy > 0 {
            Box::new((0..h).rev())
        } else {
            Box::new(0..h)
        };
        for y in rows {
            let from = y as isize - sy;
            if from < 0 || from >= hi {
                plane[y * w..(y + 1) * w].fill(0.0);
                continue;
            }
            let from = from as usize;
            plane.copy_within(from * w + src_x..from * w + src_x + n, y * w + dst_x);
            // the uncovered columns
            if sx > 0 {
                plane[y * w..y * w + dst_x].fill(0.0);
            } else if sx < 0 {
                plane[y * w + n..(y + 1) * w].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_move_and_uncovered_positions_are_zero() {
        let (h, w) = (4, 5);
        let base: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
        for (sx, sy) in [
            (2, 1),
            (-1, 2),
            (3, -1),
            (-2, -3),
            (0, 1),
            (1, 0),
            (0, 0),
            (5, 0),
        ] {
            let mut x = base.clone();
            shift_planes(&mut x, h, w, sx, sy);
            for p in 0..2 {
                for y in 0..h as isize {
                    for xx in 0..w as isize {
                        let (fy, fx) = (y - sy, xx - sx);
                        let want = if (0..h as isize).contains(&fy) && (0..w as isize).contains(&fx)
                        {
                            base[p * h * w + (fy * w as isize + fx) as usize]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            x[p * h * w + (y * w as isize + xx) as usize],
                            want,
                            "shift ({sx},{sy}) at ({xx},{y})"
                        );
                    }
                }
            }
        }
    }
}
