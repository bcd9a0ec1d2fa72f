//! Hand-checked values for the reference implementations (the ONNX node tests cover the rest).

use kestrel_core::ops::conv::window_output;
use kestrel_core::ops::movement::reshape_target;
use kestrel_core::ops::{AutoPad, ConvAttrs, PoolAttrs};
use kestrel_core::{Op, Tensor};

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

#[test]
fn conv_3x3_ones_counts_the_window() {
    let x = t(&[1, 1, 3, 3], vec![1.0; 9]);
    let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
    let op = Op::Conv(ConvAttrs {
        pads: vec![1, 1, 1, 1],
        group: 1,
        ..Default::default()
    });
    let y = op.eval(&[Some(&x), Some(&w)], 1).unwrap().remove(0);
    assert_eq!(
        y.as_f32().unwrap(),
        &[4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]
    );
}

#[test]
fn window_sizes_with_ceil_mode_and_same_padding() {
    // 5 wide, kernel 2, stride 2: floor -> 2, ceil -> 3
    assert_eq!(
        window_output(5, 2, 2, 1, (0, 0), AutoPad::NotSet, false).unwrap(),
        (0, 0, 2)
    );
    assert_eq!(
        window_output(5, 2, 2, 1, (0, 0), AutoPad::NotSet, true).unwrap(),
        (0, 0, 3)
    );
    // SAME_UPPER puts the extra pad at the end, SAME_LOWER at the start
    assert_eq!(
        window_output(6, 3, 2, 1, (0, 0), AutoPad::SameUpper, false).unwrap(),
        (0, 1, 3)
    );
    assert_eq!(
        window_output(6, 3, 2, 1, (0, 0), AutoPad::SameLower, false).unwrap(),
        (1, 0, 3)
    );
    assert!(window_output(2, 5, 1, 1, (0, 0), AutoPad::NotSet, false).is_err());
}

#[test]
fn average_pool_count_include_pad() {
    let x = t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let mk = |inc| {
        Op::AveragePool(PoolAttrs {
            kernel_shape: vec![2, 2],
            pads: vec![1, 1, 0, 0],
            count_include_pad: inc,
            ..Default::default()
        })
    };
    let y = mk(false).eval(&[Some(&x)], 1).unwrap().remove(0);
    assert_eq!(y.as_f32().unwrap(), &[1.0, 1.5, 2.0, 2.5]);
    let y = mk(true).eval(&[Some(&x)], 1).unwrap().remove(0);
    assert_eq!(y.as_f32().unwrap(), &[0.25, 0.75, 1.0, 2.5]);
}

#[test]
fn reshape_zero_and_minus_one() {
    assert_eq!(
        reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
        vec![2, 12]
    );
    assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
    assert!(reshape_target(&[2, 3, 4], &[5, -1], false).is_err());
    assert!(reshape_target(&[2, 3, 4], &[-1, -1], false).is_err());
}

#[test]
fn softmax_legacy_and_axis_forms_differ_as_specified() {
    let x = t(&[2, 2], vec![0.0, 0.0, 0.0, 0.0]);
    let y = Op::Softmax {
        axis: 0,
        legacy: true,
    }
    .eval(&[Some(&x)], 1)
    .unwrap()
    .remove(0);
    assert_eq!(y.as_f32().unwrap(), &[0.25; 4]);
    let y = Op::Softmax {
        axis: 0,
        legacy: false,
    }
    .eval(&[Some(&x)], 1)
    .unwrap()
    .remove(0);
    assert_eq!(y.as_f32().unwrap(), &[0.5; 4]);
}

#[test]
fn nan_propagates_through_relu_and_max_pool() {
    let x = t(&[1, 1, 1, 2], vec![f32::NAN, 1.0]);
    let y = Op::Unary(kestrel_core::ops::Unary::Relu)
        .eval(&[Some(&x)], 1)
        .unwrap()
        .remove(0);
    assert!(y.as_f32().unwrap()[0].is_nan());
    let p = Op::MaxPool(PoolAttrs {
        kernel_shape: vec![1, 2],
        ..Default::default()
    });
    let y = p.eval(&[Some(&x)], 1).unwrap().remove(0);
    assert!(y.as_f32().unwrap()[0].is_nan());
}

#[test]
fn tensor_invariants_are_checked() {
    assert!(Tensor::from_vec(vec![2, 2], vec![1f32; 3]).is_err());
    assert!(Tensor::zeros(kestrel_core::DType::F32, vec![usize::MAX, 2]).is_err());
    let c = Tensor::from_vec(vec![3], vec![1.9f32, -1.9, f32::NAN])
        .unwrap()
        .cast(kestrel_core::DType::I64);
    assert_eq!(c.as_slice::<i64>().unwrap(), &[1, -1, 0]);
}
