//! Region runs of a persistent GPU plan: convolutional caching on the GPU.
//!
//! A persistent plan ([`super::GpuPlan::new_persistent`]) gives every value its own device
//! buffer, so after a run each buffer still holds that value for the input of that run. The
//! next run is told which rows of the input changed ([`Band`]); [`RegionGraph::propagate`]
//! carries that band through the graph (a convolution or pooling window widens it by its
//! receptive field and maps it through the stride; elementwise ops and channel concatenation
//! take the union of their inputs' bands; anything that mixes positions makes its output wholly
//! dirty). Then each node whose outputs are clean is skipped, and each node that is dirty runs:
//! wholly, or — for the dispatches that can ([`StepRegion`]: the tiled 3x3, depthwise and 1x1
//! GEMM kernels) — over the workgroups that cover its dirty rows only.
//!
//! Invariant (exactness): after a region run every buffer holds exactly what a dense run on the
//! same input would write. Induction over runs and nodes: a value's rows outside its band depend
//! only on input rows that did not change, so their old contents are still right; its rows in
//! the band are recomputed from inputs that are right everywhere. Dispatches restricted to a band
//! recompute whole workgroup tiles, so they may also rewrite rows outside it, with the same
//! values. The first run of a plan must mark its input [`Band::All`].

use kestrel_core::ops::conv::conv_geometry;
use kestrel_core::ops::pool::pool_geometry;
use kestrel_core::{Graph, Op, ValueId};

/// A half-open range `start..end` of rows or columns.
pub type Span = (usize, usize);

/// Which part of a value's spatial map (dimensions 2 and 3 of an NCHW value) may differ from
/// the previous run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    /// Nothing changed.
    Clean,
    /// The rectangle `rows` x `cols` (every channel and image).
    Rect { rows: Span, cols: Span },
    /// Anything may have changed.
    All,
}

impl Band {
    /// The rectangle of rows `r0..r1` and columns `c0..c1`.
    pub fn rect(r0: usize, r1: usize, c0: usize, c1: usize) -> Band {
        Band::Rect {
            rows: (r0, r1),
            cols: (c0, c1),
        }
    }

    /// The smallest band covering both.
    pub fn union(self, other: Band) -> Band {
        match (self, other) {
            (Band::Clean, b) | (b, Band::Clean) => b,
            (Band::All, _) | (_, Band::All) => Band::All,
            (Band::Rect { rows: r, cols: c }, Band::Rect { rows: q, cols: d }) => Band::Rect {
                rows: (r.0.min(q.0), r.1.max(q.1)),
                cols: (c.0.min(d.0), c.1.max(d.1)),
            },
        }
    }

    /// The rows and columns this band covers in a `height` x `width` map (`None` when clean or
    /// empty there).
    pub fn within(self, height: usize, width: usize) -> Option<(Span, Span)> {
        let (rows, cols) = match self {
            Band::Clean => return None,
            Band::All => ((0, height), (0, width)),
            Band::Rect { rows, cols } => (
                (rows.0.min(height), rows.1.min(height)),
                (cols.0.min(width), cols.1.min(width)),
            ),
        };
        (rows.0 < rows.1 && cols.0 < cols.1).then_some((rows, cols))
    }
}

/// One axis of a sliding window: kernel extent `(k - 1) * dilation + 1`, stride, leading pad
/// and output size.
#[derive(Clone, Copy, Debug)]
struct Axis {
    extent: usize,
    stride: usize,
    pad: usize,
    out: usize,
}

impl Axis {
    /// The output positions whose windows read any input position of `span`.
    fn map(self, (a, b): Span) -> Option<Span> {
        let stride = self.stride.max(1);
        // output o reads inputs o*stride - pad .. o*stride - pad + extent
        let lo = (a + self.pad + 1)
            .saturating_sub(self.extent)
            .div_ceil(stride);
        let hi = ((b - 1 + self.pad) / stride + 1).min(self.out);
        (lo < hi).then_some((lo, hi))
    }
}

/// How a node maps the bands of its inputs to its outputs.
#[derive(Clone, Debug)]
enum Rule {
    /// A sliding window over rows and columns of input 0. Other inputs (weights, bias) must
    /// stay clean.
    Window { h: Axis, w: Axis },
    /// Position-wise: an output row depends on the same row of every input with the output's
    /// spatial size; an input of another spatial size (a broadcast) makes the output all dirty.
    Positionwise,
    /// Anything else: a dirty input makes every output all dirty.
    Mixing,
}

/// The window rule of a convolution or pooling geometry (dimensions 1 and 2: rows, columns).
fn sliding(
    kernel: [usize; 3],
    dilation: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
    out: [usize; 3],
) -> Rule {
    let axis = |d: usize| Axis {
        extent: (kernel[d] - 1) * dilation[d] + 1,
        stride: stride[d],
        pad: pad[d],
        out: out[d],
    };
    Rule::Window {
        h: axis(1),
        w: axis(2),
    }
}

/// The graph's nodes reduced to what band propagation needs.
pub struct RegionGraph {
    nodes: Vec<(Rule, Vec<Option<ValueId>>, Vec<ValueId>)>,
    /// `(height, width)` of every 4-D value, `None` for other ranks.
    spatial: Vec<Option<(usize, usize)>>,
    values: usize,
}

impl RegionGraph {
    pub fn new(g: &Graph) -> RegionGraph {
        let shape = |v: ValueId| g.values[v].fact.as_ref().map(|f| f.shape.clone());
        let spatial = (0..g.values.len())
            .map(|v| match shape(v).as_deref() {
                Some(&[_, _, h, w]) => Some((h, w)),
                _ => None,
            })
            .collect();
        let nodes = g
            .nodes
            .iter()
            .map(|n| {
                let in0 = n.inputs.first().copied().flatten().and_then(shape);
                let rule = match &n.op {
                    Op::Conv(a) => {
                        let w = n.inputs.get(1).copied().flatten().and_then(shape);
                        match (in0, w) {
                            (Some(x), Some(w)) if x.len() == 4 => {
                                conv_geometry(a, &x, &w).ok().map(|c| {
                                    sliding(c.kernel, c.dilation, c.stride, c.pad_begin, c.output)
                                })
                            }
                            _ => None,
                        }
                        .unwrap_or(Rule::Mixing)
                    }
                    Op::MaxPool(a) | Op::AveragePool(a) => match in0 {
                        Some(x) if x.len() == 4 => pool_geometry(a, &x)
                            .ok()
                            .map(|p| sliding(p.kernel, p.dilation, p.stride, p.pad_begin, p.output))
                            .unwrap_or(Rule::Mixing),
                        _ => Rule::Mixing,
                    },
                    Op::Unary(_)
                    | Op::Clip
                    | Op::PRelu
                    | Op::BatchNorm { .. }
                    | Op::Binary(_)
                    | Op::Identity
                    | Op::Dropout => Rule::Positionwise,
                    Op::Concat { axis } | Op::Split { axis, .. } if *axis == 1 || *axis == -3 => {
                        Rule::Positionwise
                    }
                    _ => Rule::Mixing,
                };
                (rule, n.inputs.clone(), n.outputs.clone())
            })
            .collect();
        RegionGraph {
            nodes,
            spatial,
            values: g.values.len(),
        }
    }

    /// The band of every value (indexed by value id) after the given graph inputs changed by
    /// their bands; values not reached are clean.
    pub fn propagate(&self, changed: &[(ValueId, Band)]) -> Vec<Band> {
        let mut band = vec![Band::Clean; self.values];
        for &(v, b) in changed {
            band[v] = match (b, self.spatial[v]) {
                (Band::Rect { .. }, None) => Band::All,
                _ => b,
            };
        }
        for (rule, inputs, outputs) in &self.nodes {
            let dirty: Vec<ValueId> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|&v| band[v] != Band::Clean)
                .collect();
            if dirty.is_empty() {
                continue;
            }
            for &o in outputs {
                band[o] = match (rule, self.spatial[o]) {
                    (_, None) | (Rule::Mixing, _) => Band::All,
                    (Rule::Window { h, w }, Some(_)) => {
                        if dirty
                            .iter()
                            .any(|&v| Some(Some(v)) != inputs.first().copied())
                        {
                            Band::All // a dirty weight or bias
                        } else {
                            let x = inputs[0].expect("dirty input 0");
                            window(band[x], self.spatial[x], *h, *w)
                        }
                    }
                    (Rule::Positionwise, Some(hw)) => dirty.iter().fold(Band::Clean, |acc, &v| {
                        let b = if self.spatial[v] == Some(hw) {
                            band[v]
                        } else {
                            Band::All
                        };
                        acc.union(b)
                    }),
                };
            }
        }
        band
    }
}

/// The outputs of a sliding window whose windows read any input position of `b`.
fn window(b: Band, spatial: Option<(usize, usize)>, h: Axis, w: Axis) -> Band {
    let Some((height, width)) = spatial else {
        return Band::All;
    };
    if b == Band::All {
        return Band::All;
    }
    let Some((rows, cols)) = b.within(height, width) else {
        return Band::Clean;
    };
    match (h.map(rows), w.map(cols)) {
        (Some(rows), Some(cols)) => Band::Rect { rows, cols },
        _ => Band::Clean,
    }
}

/// How a dispatch maps its output rows to workgroups.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RegionKind {
    /// `tile = tile_row * tiles_x + tile_column` over square tiles of `tile` output rows
    /// (other dimensions: output channels and images, dispatched whole); a region run walks a
    /// rectangle of tiles: `tile = x + (wg.x / y) * tiles_x + wg.x % y` with its slot's first
    /// tile `x` and tiles per row `y` (0: the whole map).
    Tiles { tiles_x: u32, tile: u32 },
    /// `wg.x` = a run of `per_wg` consecutive positions of a plane `width` positions wide, a
    /// position covering `unit` output rows (1 for pixels, 2 for Winograd F(2x2) tiles); the
    /// shader adds a first run to `wg.x`.
    Pixels { width: u32, per_wg: u32, unit: u32 },
    /// The 1x1 GEMM's RECT pipeline: `wg.x` = a run of `per_wg` consecutive pixels of the dirty
    /// rectangle (row-major), mapped back into a plane `width` wide by the shader.
    PixelRect { width: u32, per_wg: u32 },
    /// One invocation per (group, position) with the position innermost, over `groups` groups
    /// (images x channels or channel blocks) of a plane `width` positions wide (a position
    /// covering `unit` output rows), in 64-wide workgroups split over x and y; the shader reads
    /// a first position and a count.
    Flat { width: u32, groups: u32, unit: u32 },
}

/// What a region run writes into a restricted dispatch's region slot (`vec4<u32>`, the
/// last two words 0) and dispatches. A slot of zeros means the whole map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Restriction {
    /// Tiles: the first tile and the tiles per row; pixel runs: the first workgroup along x;
    /// pixel rectangles: the pixel count, the rectangle's width, its first pixel and the plane
    /// width; flat: the first position and the count (unused words 0).
    pub words: [u32; 4],
    /// Workgroups along x (tiles and pixel runs; 0 for flat dispatches).
    pub x: u32,
    /// Invocations of a `Flat` dispatch (0 for the others).
    pub invocations: u64,
    /// Share of the whole dispatch's work.
    pub share: f64,
}

impl RegionKind {
    /// The restriction covering output rows `rows` and columns `cols` of a map `height` rows
    /// high, for a dispatch of `full_x` workgroups along x when whole. Tiles cover the
    /// rectangle; the other kinds cover its rows across the whole width.
    pub fn restrict(self, rows: Span, cols: Span, height: usize, full_x: u32) -> Restriction {
        let (r0, r1) = (rows.0.min(height) as u32, rows.1.min(height) as u32);
        let r1 = r1.max(r0);
        match self {
            RegionKind::Tiles { tiles_x, tile } => {
                let (t0, t1) = (r0 / tile, r1.div_ceil(tile));
                let (c0, c1) = (
                    (cols.0 as u32 / tile).min(tiles_x),
                    (cols.1 as u32).div_ceil(tile).min(tiles_x),
                );
                let across = c1.saturating_sub(c0);
                let count = (t1 - t0) * across;
                Restriction {
                    // the first tile, and the tiles per row (the shader's wg.x walks them row
                    // by row)
                    words: [t0 * tiles_x + c0, across, 0, 0],
                    x: count,
                    invocations: 0,
                    share: count as f64 / full_x.max(1) as f64,
                }
            }
            RegionKind::Pixels {
                width,
                per_wg,
                unit,
            } => {
                let (u0, u1) = (r0 / unit, r1.div_ceil(unit));
                let (p0, p1) = (u0 * width / per_wg, (u1 * width).div_ceil(per_wg));
                Restriction {
                    words: [p0, 0, 0, 0],
                    x: p1 - p0,
                    invocations: 0,
                    share: (p1 - p0) as f64 / full_x.max(1) as f64,
                }
            }
            RegionKind::PixelRect { width, per_wg } => {
                let (c0, c1) = ((cols.0 as u32).min(width), (cols.1 as u32).min(width));
                let (rw, rh) = (c1.saturating_sub(c0), r1 - r0);
                let count = rw * rh;
                Restriction {
                    words: [count, rw, r0 * width + c0, width],
                    x: count.div_ceil(per_wg),
                    invocations: 0,
                    share: count as f64 / (width as f64 * height.max(1) as f64),
                }
            }
            RegionKind::Flat {
                width,
                groups,
                unit,
            } => {
                let (u0, u1) = (r0 / unit, r1.div_ceil(unit));
                let n = (u1 - u0) * width;
                Restriction {
                    words: [u0 * width, n, 0, 0],
                    x: 0,
                    invocations: groups as u64 * n as u64,
                    share: (u1 - u0) as f64 / (height as u32).div_ceil(unit).max(1) as f64,
                }
            }
        }
    }
}

/// A dispatch that a region run can restrict to the workgroups covering some output rows (its
/// shader reads its region slot).
#[derive(Clone, Debug)]
pub(crate) struct StepRegion {
    pub kind: RegionKind,
    /// Output rows of the map.
    pub height: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_receptive_field() {
        let ax = |extent, stride, pad, out| Axis {
            extent,
            stride,
            pad,
            out,
        };
        // 3x3 stride 1 pad 1: input rows 10..12 reach output rows 9..13
        assert_eq!(ax(3, 1, 1, 56).map((10, 12)), Some((9, 13)));
        // at the borders the span is clamped
        assert_eq!(ax(3, 1, 1, 56).map((0, 1)), Some((0, 2)));
        assert_eq!(ax(3, 1, 1, 56).map((55, 56)), Some((54, 56)));
        // 3x3 stride 2 pad 1 (out 28): outputs o read 2o-1..2o+2; 10..12 -> o = 5, 6
        assert_eq!(ax(3, 2, 1, 28).map((10, 12)), Some((5, 7)));
        // 2x2 stride 2 pooling: row 3 only feeds output 1
        assert_eq!(ax(2, 2, 0, 28).map((3, 4)), Some((1, 2)));
        // 1x1 stride 2: odd rows are never read
        assert_eq!(ax(1, 2, 0, 28).map((3, 4)), None);
        let s = Some((56, 40));
        let (h, w) = (ax(3, 1, 1, 56), ax(3, 1, 1, 40));
        assert_eq!(
            window(Band::rect(10, 12, 0, 3), s, h, w),
            Band::rect(9, 13, 0, 4)
        );
        assert_eq!(window(Band::All, s, h, w), Band::All);
        assert_eq!(window(Band::Clean, s, h, w), Band::Clean);
        // a stride-2 1x1 layer that reads neither the row nor the column
        let (h2, w2) = (ax(1, 2, 0, 28), ax(1, 2, 0, 20));
        assert_eq!(window(Band::rect(3, 4, 0, 40), s, h2, w2), Band::Clean);
        assert_eq!(
            Band::rect(1, 2, 5, 9).union(Band::rect(7, 8, 0, 3)),
            Band::rect(1, 8, 0, 9)
        );
    }

    #[test]
    fn step_regions_cover_the_rows() {
        let tiles = RegionKind::Tiles {
            tiles_x: 4,
            tile: 16,
        };
        let all = (0, 64);
        let r = tiles.restrict((0, 56), all, 56, 16);
        assert_eq!((r.words, r.x, r.share), ([0, 4, 0, 0], 16, 1.0));
        let r = tiles.restrict((17, 20), all, 56, 16);
        assert_eq!((r.words, r.x), ([4, 4, 0, 0], 4));
        assert_eq!(tiles.restrict((15, 17), all, 56, 16).x, 8);
        // a rectangle: tile rows 1..2, tile columns 1..3
        let r = tiles.restrict((17, 20), (20, 40), 56, 16);
        assert_eq!((r.words, r.x), ([5, 2, 0, 0], 2));
        let pix = RegionKind::Pixels {
            width: 56,
            per_wg: 64,
            unit: 1,
        };
        // rows 2..3 = pixels 112..168 = workgroups 1 (64..128) and 2 (128..192)
        let r = pix.restrict((2, 3), (0, 56), 56, 49);
        assert_eq!((r.words[0], r.x), (1, 2));
        assert_eq!(pix.restrict((0, 56), (7, 9), 56, 49).x, 49);
        let flat = RegionKind::Flat {
            width: 10,
            groups: 3,
            unit: 1,
        };
        let r = flat.restrict((2, 5), (0, 10), 8, 0);
        assert_eq!((r.words, r.invocations), ([20, 30, 0, 0], 90));
        // Winograd tiles: 2 output rows each; rows 3..6 need tile rows 1..3 (of 4)
        let tiles = RegionKind::Flat {
            width: 4,
            groups: 2,
            unit: 2,
        };
        let r = tiles.restrict((3, 6), (0, 1), 8, 0);
        assert_eq!((r.words, r.invocations, r.share), ([4, 8, 0, 0], 16, 0.5));
        // a 1x1 layer's rectangle: rows 2..4, columns 5..15 of a 56-wide plane
        let rect = RegionKind::PixelRect {
            width: 56,
            per_wg: 64,
        };
        let r = rect.restrict((2, 4), (5, 15), 56, 49);
        assert_eq!((r.words, r.x), ([20, 10, 117, 56], 1));
    }
}
