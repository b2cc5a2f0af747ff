//! 2-D convolution. On the float datapath, dense and grouped convs run the packed GEMM
//! ([`super::sgemm`]) over their windows with bias and activation fused, or, on maps at
//! least 14 wide, straight from the image ([`super::direct`]; stride-1 3x3 ones by
//! Winograd's minimal filtering, [`super::winograd`]), pruned ones their
//! zero-skipping kernels, or im2col + GEMM (ndarray/matrixmultiply) where those decline;
//! depthwise ones a direct loop ([`super::depthwise`]). The accumulation is generic over
//! the element type: `f32` on the float datapath, and on the fixed-point one (whose other
//! convs run `super::igemm`) `f32` or `f64` for depthwise convs, wherever it is exact (see
//! [`crate::plan::FixedChannels`]). Bias and the fused activation follow in place.

use super::direct;
use super::sgemm::{self, narrow, PackedWeights};
use super::unfold::{Columns, Matrix, Windows};
use super::winograd;
use crate::plan::Conv;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// What a convolution accumulates in.
pub trait Element:
    ndarray::LinalgScalar + Send + Sync + PartialEq + std::ops::AddAssign + super::depthwise::Source<Self>
{
    /// `self * a + b` rounded once (an instruction where the processor has one, which the
    /// kernels compiled for it use).
    fn fused_mul_add(self, a: Self, b: Self) -> Self;

    /// Multiply group `g` of `conv`'s pruned weights with `b` into `dst` with the
    /// zero-skipping kernel, if the layer has one for this element type.
    fn sparse_group(conv: &Conv, g: usize, b: &[Self], pixels: usize, dst: &mut [Self]) -> bool;

    /// Convolve `input` with `conv`'s pruned weights into `out` without unfolding windows
    /// ([`super::sparse_conv`]), if the layer has them for this element type and its
    /// geometry allows it.
    fn sparse_direct(conv: &Conv, input: &[Self], in_hw: [usize; 2], out: &mut [Self], out_hw: [usize; 2]) -> bool;

    /// The depthwise kernels in explicit vectors for this element type, if the processor
    /// has them (see [`super::depthwise::Vectors`]).
    fn depthwise_vectors() -> Option<super::depthwise::Vectors<Self>>;

    /// The depthwise whole-grid kernel for this element type, if the processor has its
    /// instructions (see [`super::depthwise::GridKernel`]).
    fn depthwise_grid() -> Option<super::depthwise::GridKernel<Self>>;
}

impl Element for f32 {
    #[inline(always)]
    fn fused_mul_add(self, a: f32, b: f32) -> f32 {
        self.mul_add(a, b)
    }

    fn sparse_group(conv: &Conv, g: usize, b: &[f32], pixels: usize, dst: &mut [f32]) -> bool {
        let Some(sparse) = conv.sparse_weight.as_ref().filter(|s| s.product_pays()) else { return false };
        sparse.matmul_rows(g * conv.c_out / conv.groups, b, pixels, dst);
        true
    }

    fn sparse_direct(conv: &Conv, input: &[f32], in_hw: [usize; 2], out: &mut [f32], out_hw: [usize; 2]) -> bool {
        let Some(sparse) = &conv.sparse_weight else { return false };
        super::sparse_conv::conv_direct(conv, sparse, input, in_hw, out, out_hw, &|_, _| ())
    }

    fn depthwise_vectors() -> Option<super::depthwise::Vectors<f32>> {
        super::depthwise::vectors_f32()
    }

    fn depthwise_grid() -> Option<super::depthwise::GridKernel<f32>> {
        super::depthwise::grid_f32()
    }
}

impl Element for f64 {
    #[inline(always)]
    fn fused_mul_add(self, a: f64, b: f64) -> f64 {
        self.mul_add(a, b)
    }

    fn sparse_group(_: &Conv, _: usize, _: &[f64], _: usize, _: &mut [f64]) -> bool {
        false
    }

    fn sparse_direct(_: &Conv, _: &[f64], _: [usize; 2], _: &mut [f64], _: [usize; 2]) -> bool {
        false
    }

    fn depthwise_vectors() -> Option<super::depthwise::Vectors<f64>> {
        super::depthwise::vectors_f64()
    }

    fn depthwise_grid() -> Option<super::depthwise::GridKernel<f64>> {
        super::depthwise::grid_f64()
    }
}

/// Whether [`group_columns`] unfolds windows (every conv but a pointwise one).
pub(crate) fn unfolds(conv: &Conv) -> bool {
    !(conv.kernel == [1, 1] && conv.stride == [1, 1] && conv.pads == [0; 4])
}

/// Group `g`'s input of one image (`input`: [C_in, H, W]) as the GEMM's right-hand side,
/// [C_in/groups * K_h * K_w, OH * OW]: the input itself for a pointwise conv, else unfolded
/// into `cols`.
pub(crate) fn group_columns<'a, T: Element>(
    conv: &Conv,
    input: &'a [T],
    g: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    cols: &'a mut Vec<T>,
) -> &'a [T] {
    let in_per_group = conv.c_in / conv.groups;
    let group_in = &input[g * in_per_group * in_hw[0] * in_hw[1]..][..in_per_group * in_hw[0] * in_hw[1]];
    if !unfolds(conv) {
        return group_in;
    }
    cols.resize(in_per_group * conv.kernel[0] * conv.kernel[1] * out_hw[0] * out_hw[1], T::zero());
    im2col(conv, group_in, in_hw, out_hw, cols);
    cols
}

/// Columns per parallel GEMM task: large enough to amortise the task, small enough to
/// split a 56 x 56 map across cores.
const GEMM_COLUMNS_PER_TASK: usize = 512;

/// Maps of at most this many pixels are convolved for the whole batch in one GEMM: its
/// column panels full, the weights read once per batch rather than per image.
pub(crate) const BATCH_GEMM_MAX_PIXELS: usize = 256;

/// Convolve a batch `input` ([N, C_in, H, W]) into `out` ([N, C_out, OH, OW]), bias and
/// activation included, `input_threshold` applied.
pub fn conv_batch(conv: &Conv, input: &[f32], in_hw: [usize; 2], out: &mut [f32], out_hw: [usize; 2]) {
    conv_batch_then(conv, input, in_hw, out, out_hw, &|_, _| ())
}

/// What is done to each image's output (its index and values) once computed.
pub type Then<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// [`conv_batch`], then `then` on each image's output: where the images run one by one,
/// right after its conv, while the output is in cache (a residual add: see
/// `exec::fused_residual`).
pub fn conv_batch_then(
    conv: &Conv,
    input: &[f32],
    in_hw: [usize; 2],
    out: &mut [f32],
    out_hw: [usize; 2],
    then: &Then,
) {
    let (in_len, out_len) = (conv.c_in * in_hw[0] * in_hw[1], conv.c_out * out_hw[0] * out_hw[1]);
    let batch = input.len() / in_len.max(1);
    let pixels = out_hw[0] * out_hw[1];
    // After a conv over the whole batch (its output small), each image in turn.
    let each_image = |out: &mut [f32]| out.par_chunks_mut(out_len.max(1)).enumerate().for_each(|(n, o)| then(n, o));
    if runs_as_dots(conv, in_hw, out_hw) {
        conv_as_dots(conv, &super::thresholded(input, conv.input_threshold), batch, out);
        return each_image(out);
    }
    if batch > 1 && pixels <= BATCH_GEMM_MAX_PIXELS && runs_packed(conv) && !runs_per_image(conv, out_hw) {
        let input = super::thresholded(input, conv.input_threshold);
        in_image_runs(batch, (&input, in_len), (out, out_len), |input, out, parallel| {
            // Per group: [channel][image][pixel], then each image's channels in place.
            let out_per_group = conv.c_out / conv.groups;
            let mut sums = super::scratch::take_len(out_per_group * (input.len() / in_len) * pixels, 0.0f32);
            for g in 0..conv.groups {
                packed_group(conv, g, (input, in_len), in_hw, &mut sums, out_hw, parallel);
                put_group_in_images(&sums, g, out_per_group, pixels, out);
            }
        });
        return each_image(out);
    }
    // Images in parallel, each conv on one thread; or, with fewer images than threads, each
    // conv over all of them.
    let parallel = batch < rayon::current_num_threads();
    out.par_chunks_mut(out_len).zip(input.par_chunks(in_len)).enumerate().for_each(|(n, (o, image))| {
        let x = super::thresholded(image, conv.input_threshold);
        conv_image(conv, &x, in_hw, o, out_hw, parallel);
        then(n, o);
    });
}

/// `batched(input, out, parallel)` on the whole batch (`input` and `out` holding `batch`
/// images of the given lengths) or, with at least as many images as threads, on one run of
/// images per thread, each serial: threads that split one GEMM's row panels meet twice per
/// block of columns, which on small maps cost more than the GEMM (mobilenet_v3_small's 1x1
/// convs on 14x14 maps ran slower on two threads than on one).
pub(crate) fn in_image_runs<T: Sync, U: Send>(
    batch: usize,
    (input, in_len): (&[T], usize),
    (out, out_len): (&mut [U], usize),
    batched: impl Fn(&[T], &mut [U], bool) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads < 2 || batch < threads {
        return batched(input, out, true);
    }
    let per_run = batch.div_ceil(threads);
    out.par_chunks_mut(per_run * out_len)
        .zip(input.par_chunks(per_run * in_len))
        .for_each(|(out, input)| batched(input, out, false));
}

/// Group `g`'s sums of a batched GEMM (`sums`: [channel][image][pixel], `channels` of them)
/// into its place in each image of `out` ([N, C_out, pixels]).
pub(crate) fn put_group_in_images(sums: &[f32], g: usize, channels: usize, pixels: usize, out: &mut [f32]) {
    let batch = sums.len() / (channels * pixels).max(1);
    let out_len = out.len() / batch.max(1);
    out.par_chunks_exact_mut(out_len).enumerate().for_each(|(n, image)| {
        let group = &mut image[g * channels * pixels..][..channels * pixels];
        for (c, dst) in group.chunks_exact_mut(pixels).enumerate() {
            dst.copy_from_slice(&sums[(c * batch + n) * pixels..][..pixels]);
        }
    });
}

/// Whether the float path runs `conv` as dot products of its weight rows with each image
/// ([`super::dense::dot_rows`]): a dense 1x1 conv on a 1x1 map, as in squeeze-and-excite
/// blocks. The GEMMs padded its one column per image to a panel (32 or 7 of them): 144 ->
/// 576 channels took 0.04 ms, 8 GB/s of weights.
fn runs_as_dots(conv: &Conv, in_hw: [usize; 2], out_hw: [usize; 2]) -> bool {
    is_pointwise_on_a_point(conv, in_hw, out_hw) && runs_packed(conv)
}

/// Whether `conv` is a fully connected layer in a conv's shape: a 1x1 kernel over one
/// group, unpadded, from a 1x1 map (`in_hw`) to a 1x1 map (`out_hw`). Both datapaths run
/// it as one.
pub(crate) fn is_pointwise_on_a_point(conv: &Conv, in_hw: [usize; 2], out_hw: [usize; 2]) -> bool {
    conv.kernel == [1, 1] && conv.groups == 1 && conv.pads == [0; 4] && in_hw == [1, 1] && out_hw == [1, 1]
}

/// `conv` over `batch` images as a fully connected layer (see [`runs_as_dots`]): `[N,
/// C_in]` in, `[N, C_out]` out, bias and activation included.
fn conv_as_dots(conv: &Conv, input: &[f32], batch: usize, out: &mut [f32]) {
    super::dense::dot_rows(&conv.weight, conv.c_in, input, batch, out);
    let finish = |v: f32, bias: f32| conv.activation.map_or(v + bias, |act| act.apply(v + bias));
    for image in out.chunks_exact_mut(conv.c_out) {
        image.iter_mut().zip(&conv.bias).for_each(|(v, &bias)| *v = finish(*v, bias));
    }
}

/// Whether the float path runs `conv` on the packed GEMM: every conv but depthwise ones and
/// pruned ones (their own kernels).
fn runs_packed(conv: &Conv) -> bool {
    !is_depthwise(conv) && conv.sparse_weight.is_none()
}

/// Whether `conv` has one filter per channel (its own kernel, [`super::depthwise`]).
fn is_depthwise(conv: &Conv) -> bool {
    conv.c_in == conv.groups && conv.c_out == conv.groups
}

/// Convolve one image `input` ([C_in, H, W]) into `out` ([C_out, OH, OW]), bias and
/// activation included; with `parallel`, over rayon's threads (else on the caller's).
///
/// Depthwise and pruned layers run their own kernels, then a bias and activation pass;
/// the rest run the packed float GEMM ([`super::sgemm`]) over the image's windows, each
/// run of sums finished while in cache.
pub fn conv_image(conv: &Conv, input: &[f32], in_hw: [usize; 2], out: &mut [f32], out_hw: [usize; 2], parallel: bool) {
    let pixels = out_hw[0] * out_hw[1];
    let finish = |channel: &mut [f32], bias: f32| super::activate_with(channel, |v| v + bias, conv.activation);
    if is_depthwise(conv) {
        return super::depthwise::depthwise(conv, &conv.weight, input, in_hw, out, out_hw, |c, plane| {
            finish(plane, conv.bias[c])
        });
    }
    if runs_as_dots(conv, in_hw, out_hw) {
        return conv_as_dots(conv, input, 1, out);
    }
    if let Some(sparse) = &conv.sparse_weight {
        // Bias and activation on each channel as the sparse kernel copies it out.
        let finished = |c: usize, plane: &mut [f32]| finish(plane, conv.bias[c]);
        if super::sparse_conv::conv_direct(conv, sparse, input, in_hw, out, out_hw, &finished) {
            return;
        }
    }
    if !runs_packed(conv) {
        accumulate(conv, &conv.weight, input, in_hw, out, out_hw);
        out.par_chunks_mut(pixels)
            .zip(conv.bias.par_iter())
            .with_min_len(if parallel { 1 } else { usize::MAX })
            .for_each(|(channel, &bias)| finish(channel, bias));
        return;
    }
    let out_per_group = conv.c_out / conv.groups;
    for g in 0..conv.groups {
        let dst = &mut out[g * out_per_group * pixels..][..out_per_group * pixels];
        packed_group(conv, g, (input, input.len()), in_hw, dst, out_hw, parallel);
    }
}

/// Group `g` of `conv` over the images of `input` (`image_len` values apart) into `out`
/// ([C_out / groups, N * OH * OW]) on the packed GEMM, bias and activation fused.
fn packed_group(
    conv: &Conv,
    g: usize,
    (input, image_len): (&[f32], usize),
    in_hw: [usize; 2],
    out: &mut [f32],
    out_hw: [usize; 2],
    parallel: bool,
) {
    let (in_per_group, out_per_group) = (conv.c_in / conv.groups, conv.c_out / conv.groups);
    let k = in_per_group * conv.kernel[0] * conv.kernel[1];
    let packings: &Packings = conv.derived.get_or(Packings::default);
    let groups = || conv.weight.chunks_exact(out_per_group * k);
    let finish = |row: usize, sums: &[f32], out: &mut [f32]| {
        let bias = conv.bias[g * out_per_group + row];
        super::activate_into(out, sums, |v| v + bias, conv.activation);
    };
    if input.len() == image_len && runs_winograd(conv, out_hw) {
        let weights = packings.winograd.get_or_init(|| winograd::WinogradWeights::new(conv));
        return winograd::conv_winograd(conv, weights, input, in_hw, out, out_hw, parallel, finish);
    }
    if input.len() == image_len && runs_direct(conv, out_hw) {
        let weights = packings.direct.get_or_init(|| direct::DirectWeights::new(conv));
        return direct::conv_direct(conv, weights, input, in_hw, out, out_hw, parallel, finish);
    }
    // Few columns (a 7x7 map at batch 1) over a long `k`: the GEMM turned around.
    let columns = out.len() / out_per_group.max(1);
    let narrow = columns <= narrow::NARROW_MAX_COLUMNS && k >= NARROW_MIN_K && narrow::available();
    let gemm = if narrow {
        let packed = packings
            .columns
            .get_or_init(|| groups().map(|group| narrow::PackedColumns::new(group, out_per_group, k)).collect());
        GroupGemm::Narrow(&packed[g])
    } else {
        let packed =
            packings.rows.get_or_init(|| groups().map(|group| PackedWeights::new(group, out_per_group, k)).collect());
        GroupGemm::Rows(&packed[g])
    };
    let pixels = in_hw[0] * in_hw[1];
    if unfolds(conv) || input.len() > image_len {
        let windows = Windows::new(conv, (input, image_len), (g * in_per_group, in_per_group), in_hw, out_hw);
        gemm.run(&windows, out, parallel, finish);
    } else {
        let group_in = &input[g * in_per_group * pixels..][..in_per_group * pixels];
        gemm.run(&Matrix { values: group_in, n: pixels }, out, parallel, finish);
    }
}

/// A conv group's packed weights, for the usual GEMM or the turned-around one.
enum GroupGemm<'a> {
    Rows(&'a PackedWeights),
    Narrow(&'a narrow::PackedColumns),
}

impl GroupGemm<'_> {
    /// The group's weights times `b` into `out`, each row finished by `finish`.
    fn run(
        &self,
        b: &impl Columns<f32>,
        out: &mut [f32],
        parallel: bool,
        finish: impl Fn(usize, &[f32], &mut [f32]) + Sync,
    ) {
        match self {
            GroupGemm::Rows(a) => sgemm::gemm_with(a, b, out, parallel, finish),
            GroupGemm::Narrow(a) => narrow::gemm_narrow(a, b, out, parallel, finish),
        }
    }
}

/// Whether the float path runs `conv` by Winograd's minimal filtering ([`winograd`]): a
/// dense 3x3 conv at stride 1 on a map at least [`WINOGRAD_MIN_WIDTH`] wide.
fn runs_winograd(conv: &Conv, out_hw: [usize; 2]) -> bool {
    out_hw[1] >= WINOGRAD_MIN_WIDTH && winograd::applies(conv)
}

/// Narrowest output map a conv runs on [`winograd`] at. On 7x7 maps its transformed
/// weights (16/9 of the layer's, 17 MB for 512 channels) come from memory for a few tiles
/// per image: ResNet-18's 7x7 layers ran no faster (7.5-9.2 ms against 7.6-8.0 at batch 1
/// or 8, one thread).
const WINOGRAD_MIN_WIDTH: usize = 14;

/// Whether `conv` runs image by image on a kernel of its own ([`winograd`] or [`direct`])
/// rather than over a batch's small maps in one GEMM.
fn runs_per_image(conv: &Conv, out_hw: [usize; 2]) -> bool {
    runs_winograd(conv, out_hw) || runs_direct(conv, out_hw)
}

/// Whether the float path runs `conv` (one group of it, one image at a time) on the direct
/// kernel ([`direct`]), for output maps of `out_hw`.
fn runs_direct(conv: &Conv, out_hw: [usize; 2]) -> bool {
    conv.kernel != [1, 1] && out_hw[0] > 0 && out_hw[1] >= DIRECT_MIN_WIDTH && direct::applies(conv)
}

/// Narrowest output map a conv runs on the direct kernel ([`direct`]) at: on narrower
/// ones the positions past each row's end are too large a share. (Pointwise convs stay on
/// the packed GEMM: their packing is a plain copy, which streams from memory where the
/// direct kernel's reads, a run from each of `C` planes per tile, did not: mobilenet_v2 at
/// batch 8 ran at 0.88x.)
const DIRECT_MIN_WIDTH: usize = 14;

/// Shortest `k` the turned-around GEMM takes: below a chunk of it, the usual one was as
/// fast or faster (960 x 160 x 49: 0.93x).
const NARROW_MIN_K: usize = 256;

/// What a conv's packed GEMMs derive from its weights, per group (kept in the plan): the
/// usual packing, and the turned-around one for few columns, each made when first needed.
#[derive(Default)]
struct Packings {
    direct: std::sync::OnceLock<direct::DirectWeights>,
    winograd: std::sync::OnceLock<winograd::WinogradWeights>,
    rows: std::sync::OnceLock<Vec<PackedWeights>>,
    columns: std::sync::OnceLock<Vec<narrow::PackedColumns>>,
}

/// `out` = the convolution of `input` with `weight` (`conv`'s geometry), without bias.
pub fn accumulate<T: Element>(
    conv: &Conv,
    weight: &[T],
    input: &[T],
    in_hw: [usize; 2],
    out: &mut [T],
    out_hw: [usize; 2],
) {
    let in_per_group = conv.c_in / conv.groups;
    let out_per_group = conv.c_out / conv.groups;
    if is_depthwise(conv) {
        super::depthwise::depthwise(conv, weight, input, in_hw, out, out_hw, |_, _| ());
    } else if !T::sparse_direct(conv, input, in_hw, out, out_hw) {
        let pixels = out_hw[0] * out_hw[1];
        let k = in_per_group * conv.kernel[0] * conv.kernel[1];
        let mut cols = Vec::new();
        for g in 0..conv.groups {
            let b = group_columns(conv, input, g, in_hw, out_hw, &mut cols);
            let dst = &mut out[g * out_per_group * pixels..][..out_per_group * pixels];
            if T::sparse_group(conv, g, b, pixels, dst) {
                continue;
            }
            let a = ArrayView2::from_shape((out_per_group, k), &weight[g * out_per_group * k..][..out_per_group * k])
                .expect("validated weight shape");
            let b = ArrayView2::from_shape((k, pixels), b).expect("validated input shape");
            let c = ArrayViewMut2::from_shape((out_per_group, pixels), dst).expect("validated output shape");
            parallel_gemm(a, b, c);
        }
    }
}

/// `c = a * b`, split over column blocks of `b` and `c` across threads.
pub(crate) fn parallel_gemm<T: Element>(a: ArrayView2<T>, b: ArrayView2<T>, mut c: ArrayViewMut2<T>) {
    if c.ncols() <= GEMM_COLUMNS_PER_TASK {
        general_mat_mul(T::one(), &a, &b, T::zero(), &mut c);
        return;
    }
    let tasks: Vec<_> = b
        .axis_chunks_iter(Axis(1), GEMM_COLUMNS_PER_TASK)
        .zip(c.axis_chunks_iter_mut(Axis(1), GEMM_COLUMNS_PER_TASK))
        .collect();
    tasks.into_par_iter().for_each(|(b, mut c)| general_mat_mul(T::one(), &a, &b, T::zero(), &mut c));
}

/// Output positions `[lo, hi)` whose input coordinate `o * stride + offset` lies inside
/// `[0, len)`; outside it the window reads padding.
pub(crate) fn valid_range(outputs: usize, stride: usize, offset: isize, len: usize) -> (usize, usize) {
    let lo = if offset >= 0 { 0 } else { (offset.unsigned_abs()).div_ceil(stride) };
    let end = len as isize - offset; // o * stride < end
    let hi = if end <= 0 { 0 } else { (end as usize).div_ceil(stride) };
    let hi = hi.min(outputs);
    (lo.min(hi), hi)
}

/// Unfold windows into `cols` as a [C * K_h * K_w, OH * OW] matrix (zeros for padding).
fn im2col<T: Element>(conv: &Conv, input: &[T], [h, w]: [usize; 2], [oh, ow]: [usize; 2], cols: &mut [T]) {
    let [kh, kw] = conv.kernel;
    let [sh, sw] = conv.stride;
    let [dh, dw] = conv.dilation;
    let (top, left) = (conv.pads[0] as isize, conv.pads[1] as isize);
    cols.par_chunks_mut(oh * ow).enumerate().for_each(|(row, col)| {
        let c = row / (kh * kw);
        let (ky, kx) = ((row / kw) % kh, row % kw);
        let plane = &input[c * h * w..][..h * w];
        let x_offset = (kx * dw) as isize - left;
        let (lo, hi) = valid_range(ow, sw, x_offset, w);
        for oy in 0..oh {
            let y = (oy * sh + ky * dh) as isize - top;
            let dst = &mut col[oy * ow..][..ow];
            if y < 0 || y >= h as isize {
                dst.fill(T::zero());
                continue;
            }
            let src = &plane[y as usize * w..][..w];
            dst[..lo].fill(T::zero());
            dst[hi..].fill(T::zero());
            let first = (lo * sw) as isize + x_offset;
            if sw == 1 {
                dst[lo..hi].copy_from_slice(&src[first as usize..][..hi - lo]);
            } else {
                for (d, x) in dst[lo..hi].iter_mut().zip((first as usize..).step_by(sw)) {
                    *d = src[x];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Activation;
    use crate::sparse_rows::SparseRows;

    /// A straightforward reference convolution, to check the fast paths against.
    fn reference(conv: &Conv, input: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
        let (ipg, opg) = (conv.c_in / conv.groups, conv.c_out / conv.groups);
        let [kh, kw] = conv.kernel;
        let mut out = vec![0.0; conv.c_out * oh * ow];
        for co in 0..conv.c_out {
            let g = co / opg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = conv.bias[co];
                    for ci in 0..ipg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * conv.stride[0] + ky * conv.dilation[0]) as isize - conv.pads[0] as isize;
                                let x = (ox * conv.stride[1] + kx * conv.dilation[1]) as isize - conv.pads[1] as isize;
                                if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                                    let v = input[((g * ipg + ci) * h + y as usize) * w + x as usize];
                                    acc += v * conv.weight[((co * ipg + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out[(co * oh + oy) * ow + ox] = conv.activation.map_or(acc, |a| a.apply(acc));
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)] // one argument per conv attribute reads best in the cases
    fn check(
        c_in: usize,
        c_out: usize,
        groups: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pads: [usize; 4],
        hw: usize,
    ) {
        let weight: Vec<f32> =
            (0..c_out * c_in / groups * kernel * kernel).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.1 - 0.2).collect();
        let conv = Conv {
            bias,
            stride: [stride; 2],
            dilation: [dilation; 2],
            pads,
            groups,
            activation: Some(Activation::Clip { min: -1.0, max: 3.0 }),
            ..Conv::new(weight, c_in, c_out, [kernel; 2])
        };
        let input: Vec<f32> = (0..c_in * hw * hw).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
        let oh =
            hass_proto::geometry::window_output_len(hw, kernel, stride, dilation, pads[0], pads[2], false).unwrap();
        let ow =
            hass_proto::geometry::window_output_len(hw, kernel, stride, dilation, pads[1], pads[3], false).unwrap();
        let mut out = vec![f32::NAN; c_out * oh * ow];
        conv_image(&conv, &input, [hw, hw], &mut out, [oh, ow], true);
        let expected = reference(&conv, &input, [hw, hw], [oh, ow]);
        for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "element {i}: {a} vs {b}");
        }
    }

    /// Pruned convs write every value of their output whichever kernel runs them (the
    /// runtime hands layers stale buffers): the direct sparse kernel, and for a grouped or
    /// dilated conv the sparse product over unfolded windows or, denser, the GEMM.
    #[test]
    fn pruned_convs_write_every_output() {
        // (groups, dilation, one weight in `keep` kept): 1/3 is too dense for the product.
        for (groups, dilation, keep) in [(1, 1, 3), (2, 1, 5), (2, 1, 3), (1, 2, 5)] {
            let (c_in, c_out, hw) = (8, 6, 9);
            let weight: Vec<f32> = (0..c_out * c_in / groups * 9)
                .map(|i| if i % keep == 0 { ((i * 37 % 11) as f32 - 5.0) / 7.0 } else { 0.0 })
                .collect();
            let conv = Conv {
                bias: (0..c_out).map(|i| i as f32 * 0.1).collect(),
                dilation: [dilation; 2],
                pads: [dilation; 4],
                groups,
                sparse_weight: Some(SparseRows::of_dense(&weight, c_out)),
                ..Conv::new(weight, c_in, c_out, [3, 3])
            };
            let input: Vec<f32> = (0..c_in * hw * hw).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
            let mut out = vec![f32::NAN; c_out * hw * hw];
            conv_image(&conv, &input, [hw, hw], &mut out, [hw, hw], true);
            let expected = reference(&conv, &input, [hw, hw], [hw, hw]);
            for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{groups} groups, dilation {dilation}, {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn dense_3x3_padded() {
        check(3, 8, 1, 3, 1, 1, [1, 1, 1, 1], 9);
    }

    /// A stride-1 3x3 conv on a wide enough map runs by Winograd's minimal filtering unless
    /// told not to, then on the direct kernel: each the same floats as that kernel alone,
    /// in a batch as alone, and both near the reference.
    #[test]
    fn a_3x3_conv_at_stride_1_sums_by_winograd_unless_told_not_to() {
        if !direct::available() {
            return;
        }
        let (c, hw) = (12, 16);
        let weight: Vec<f32> = (0..c * c * 9).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        let input: Vec<f32> = (0..2 * c * hw * hw).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
        let image = &input[..c * hw * hw];
        for winograd in [true, false] {
            let conv = Conv { pads: [1; 4], winograd, ..Conv::new(weight.clone(), c, c, [3, 3]) };
            let mut alone = vec![f32::NAN; c * hw * hw];
            let copy = |_: usize, sums: &[f32], out: &mut [f32]| out.copy_from_slice(sums);
            if winograd {
                let weights = winograd::WinogradWeights::new(&conv);
                winograd::conv_winograd(&conv, &weights, image, [hw, hw], &mut alone, [hw, hw], false, copy);
            } else {
                let weights = direct::DirectWeights::new(&conv);
                direct::conv_direct(&conv, &weights, image, [hw, hw], &mut alone, [hw, hw], false, copy);
            }
            let mut batch = vec![f32::NAN; 2 * c * hw * hw];
            conv_batch(&conv, &input, [hw, hw], &mut batch, [hw, hw]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&batch[..alone.len()]), bits(&alone), "winograd {winograd}");
            let expected = reference(&conv, image, [hw, hw], [hw, hw]);
            for (i, (a, b)) in alone.iter().zip(&expected).enumerate() {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "winograd {winograd}, element {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn strided_asymmetric_padding_and_dilation() {
        check(4, 6, 1, 3, 2, 2, [2, 1, 0, 2], 11);
    }

    #[test]
    fn pointwise_takes_the_no_im2col_path() {
        check(16, 8, 1, 1, 1, 1, [0; 4], 30);
    }

    /// A 1x1 conv on a 1x1 map runs as dot products: against the reference, and in a batch
    /// each image the same floats as alone (a batch of 12 included: more than one run of
    /// dot products), threshold, bias and activation included.
    #[test]
    fn pointwise_on_a_point_is_each_image_s_dot_products() {
        check(37, 21, 1, 1, 1, 1, [0; 4], 1);
        check(3, 5, 1, 1, 2, 1, [0; 4], 1);
        let (c_in, c_out) = (37, 21);
        let conv = Conv {
            bias: (0..c_out).map(|i| i as f32 * 0.1 - 0.5).collect(),
            activation: Some(Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }),
            input_threshold: Some(0.1),
            ..Conv::new((0..c_out * c_in).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect(), c_in, c_out, [1, 1])
        };
        assert!(runs_as_dots(&conv, [1, 1], [1, 1]));
        for batch in [1, 3, 12] {
            let input: Vec<f32> = (0..batch * c_in).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
            let mut out = vec![f32::NAN; batch * c_out];
            conv_batch(&conv, &input, [1, 1], &mut out, [1, 1]);
            for (image, got) in input.chunks(c_in).zip(out.chunks(c_out)) {
                let mut alone = vec![f32::NAN; c_out];
                conv_image(
                    &conv,
                    &super::super::thresholded(image, conv.input_threshold),
                    [1, 1],
                    &mut alone,
                    [1, 1],
                    true,
                );
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn grouped_and_depthwise() {
        check(8, 16, 4, 3, 1, 1, [1; 4], 7);
        check(12, 12, 12, 3, 2, 1, [1; 4], 9);
        check(6, 6, 6, 5, 1, 1, [2; 4], 8);
    }

    #[test]
    fn valid_ranges_clip_padding_on_both_sides() {
        // 5 outputs, stride 2, input x = 2o - 1 must lie in [0, 6): o in [1, 3].
        assert_eq!(valid_range(5, 2, -1, 6), (1, 4));
        assert_eq!(valid_range(4, 1, 2, 3), (0, 1));
        assert_eq!(valid_range(3, 1, 5, 3), (0, 0));
    }

    #[test]
    fn strided_depthwise_with_wide_padding() {
        check(5, 5, 5, 3, 3, 1, [2, 0, 1, 3], 10);
        check(4, 4, 4, 3, 2, 2, [3, 3, 3, 3], 6);
    }

    #[test]
    fn depthwise_rows_wider_than_a_block() {
        // 40 and 20 columns: whole blocks of 16 and a partial one, stride 1 and 2.
        check(3, 3, 3, 3, 1, 1, [1; 4], 40);
        check(3, 3, 3, 3, 2, 1, [1, 0, 1, 2], 40);
        check(2, 2, 2, 5, 1, 2, [4; 4], 19);
        // 41 rows and columns: pairs of rows and a last one alone, a block of 32 and 9.
        check(2, 2, 2, 3, 1, 1, [1; 4], 41);
        // 36 output rows at stride 2 in bands of 16, 16 and 4, two rows of padding at
        // either end: the bands' copies start inside the padding, the input and past it.
        check(2, 2, 2, 3, 2, 1, [2; 4], 70);
    }

    /// A batch of small maps runs as one GEMM over all the images' windows (or one per run
    /// of images per thread); each image's output is the same floats as when convolved
    /// alone, threshold, bias and activation included, on 1 to 3 threads (runs of unequal
    /// length, and more threads than images).
    #[test]
    fn a_batch_of_small_maps_is_each_image_convolved_alone() {
        for threads in 1..=3 {
            for batch in [2, 5] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                pool.install(|| check_batch(batch));
            }
        }
    }

    fn check_batch(batch: usize) {
        let (c_in, c_out, hw) = (5, 14, 7);
        let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        let conv = Conv {
            pads: [1; 4],
            bias: (0..c_out).map(|i| i as f32 * 0.1 - 0.5).collect(),
            activation: Some(Activation::Relu),
            input_threshold: Some(0.2),
            ..Conv::new(weight, c_in, c_out, [3, 3])
        };
        let image_len = c_in * hw * hw;
        let input: Vec<f32> = (0..batch * image_len).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
        let mut batched = vec![f32::NAN; batch * c_out * hw * hw];
        conv_batch(&conv, &input, [hw, hw], &mut batched, [hw, hw]);
        for (image, got) in input.chunks_exact(image_len).zip(batched.chunks_exact(c_out * hw * hw)) {
            let thresholded: Vec<f32> = image.iter().map(|&v| if v <= 0.2 { 0.0 } else { v }).collect();
            let mut alone = vec![f32::NAN; c_out * hw * hw];
            conv_image(&conv, &thresholded, [hw, hw], &mut alone, [hw, hw], true);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn large_map_splits_gemm_columns() {
        check(3, 4, 1, 3, 1, 1, [1; 4], 40);
    }
}
