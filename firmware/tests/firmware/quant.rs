//! Fixed-point requantisation against exact references.

use ddm_core::Rng;
use ddm_firmware::quant::{
    multiply_by_quantized_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul, silu_lut, AddParams, QuantParams, Requant,
};

/// gemmlowp's `SaturatingRoundingDoublingHighMul`, written as in gemmlowp (sign-dependent
/// nudge, truncating division).
fn gemmlowp_srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `round(n / 2^e)` with ties away from zero, exactly, in i128.
fn round_div_pow2(n: i128, e: u32) -> i128 {
    let d = 1i128 << e;
    let q = n.abs() / d;
    let r = n.abs() % d;
    let q = if 2 * r >= d { q + 1 } else { q };
    if n < 0 {
        -q
    } else {
        q
    }
}

fn interesting_i32(rng: &mut Rng) -> i32 {
    match rng.below(6) {
        0 => [
            i32::MIN,
            i32::MAX,
            0,
            1,
            -1,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
        ][rng.below(8) as usize],
        1 => rng.below(512) as i32 - 256,
        2 => (rng.below(1 << 20) as i32) - (1 << 19),
        _ => rng.next_u32() as i32,
    }
}

#[test]
fn doubling_high_mul_matches_gemmlowp_and_rounds_to_nearest() {
    let mut rng = Rng::new(1);
    for _ in 0..200_000 {
        let (a, b) = (interesting_i32(&mut rng), interesting_i32(&mut rng));
        assert_eq!(
            saturating_rounding_doubling_high_mul(a, b),
            gemmlowp_srdhm(a, b),
            "{a} * {b}"
        );
        if !(a == i32::MIN && b == i32::MIN) {
            // Exactly floor(a b / 2^31 + 1/2): the nearest integer, ties upwards.
            let exact = (i128::from(a) * i128::from(b) + (1i128 << 30)).div_euclid(1i128 << 31);
            assert_eq!(
                i128::from(saturating_rounding_doubling_high_mul(a, b)),
                exact
            );
        }
    }
    // Ties: a b / 2^31 = +-0.5 and +-1.5 round upwards (gemmlowp's behaviour; the final
    // RoundingDivideByPOT is the step that rounds ties away from zero).
    assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 1), 1);
    assert_eq!(saturating_rounding_doubling_high_mul(-(1 << 30), 1), 0);
    assert_eq!(saturating_rounding_doubling_high_mul(3 << 29, 2), 2);
    assert_eq!(saturating_rounding_doubling_high_mul(-(3 << 29), 2), -1);
    // The one overflow saturates.
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
        i32::MAX
    );
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
        -i32::MAX
    );
}

#[test]
fn rounding_divide_by_pot_is_exact_rounding() {
    let mut rng = Rng::new(2);
    for _ in 0..100_000 {
        let x = interesting_i32(&mut rng);
        let e = rng.below(32);
        assert_eq!(
            i128::from(rounding_divide_by_pot(x, e as i32)),
            round_div_pow2(i128::from(x), e),
            "{x} / 2^{e}"
        );
    }
    assert_eq!(rounding_divide_by_pot(3, 1), 2);
    assert_eq!(rounding_divide_by_pot(-3, 1), -2);
    assert_eq!(rounding_divide_by_pot(5, 1), 3);
    assert_eq!(rounding_divide_by_pot(-5, 1), -3);
    assert_eq!(rounding_divide_by_pot(1, 1), 1);
    assert_eq!(rounding_divide_by_pot(-1, 1), -1);
    assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
    assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
    assert_eq!(rounding_divide_by_pot(7, 0), 7);
}

#[test]
fn quantize_multiplier_is_within_half_an_ulp_of_q31() {
    let mut rng = Rng::new(3);
    for _ in 0..100_000 {
        // Log-uniform in [2^-40, 2^20].
        let real = (2.0f64).powf(-40.0 + 60.0 * f64::from(rng.uniform()));
        let r = Requant::from_real(real).unwrap();
        r.validate().unwrap();
        if r.multiplier == 0 {
            assert!(real < (2.0f64).powi(-32), "{real} became 0");
            continue;
        }
        assert!(
            (1 << 30..=i32::MAX).contains(&r.multiplier),
            "{real}: {r:?}"
        );
        let relative = (r.real() - real).abs() / real;
        assert!(relative <= (2.0f64).powi(-31), "{real}: {r:?} ({relative})");
    }
    assert_eq!(Requant::from_real(0.0).unwrap(), Requant::default());
    assert_eq!(
        Requant::from_real(0.5).unwrap(),
        Requant {
            multiplier: 1 << 30,
            shift: 0
        }
    );
    assert_eq!(
        Requant::from_real(1.0).unwrap(),
        Requant {
            multiplier: 1 << 30,
            shift: 1
        }
    );
    // A mantissa that rounds up to 2^31 moves to the next exponent.
    let just_below_one = 1.0 - (2.0f64).powi(-40);
    assert_eq!(
        Requant::from_real(just_below_one).unwrap(),
        Requant {
            multiplier: 1 << 30,
            shift: 1
        }
    );
    for bad in [-1.0, f64::NAN, f64::INFINITY, (2.0f64).powi(31)] {
        assert!(Requant::from_real(bad).is_err(), "{bad}");
    }
    assert!(Requant {
        multiplier: -1,
        shift: 0
    }
    .validate()
    .is_err());
    assert!(Requant {
        multiplier: 1 << 30,
        shift: 31
    }
    .validate()
    .is_err());
}

#[test]
fn requantisation_is_within_one_lsb_of_exact_and_matches_tflite() {
    let mut rng = Rng::new(4);
    let mut exact = 0usize;
    let total = 200_000;
    for _ in 0..total {
        let real = (2.0f64).powf(-30.0 + 34.0 * f64::from(rng.uniform()));
        let r = Requant::from_real(real).unwrap();
        let x = (rng.next_u32() as i32) >> rng.below(31);
        let got = r.apply(x);
        // TFLite's reference: left shift, gemmlowp SRDHM, RoundingDivideByPOT.
        let left = r.shift.max(0);
        let right = (-r.shift).max(0);
        let shifted = x.checked_mul(1 << left);
        if let Some(shifted) = shifted {
            let tflite = rounding_divide_by_pot(gemmlowp_srdhm(shifted, r.multiplier), right);
            assert_eq!(got, tflite);
        }
        // Against the exact product with the represented multiplier.
        let exact_value = round_div_pow2(
            i128::from(x) * i128::from(r.multiplier) * (1i128 << left),
            (31 + right) as u32,
        );
        if shifted.is_some() {
            let diff = (i128::from(got) - exact_value).abs();
            assert!(diff <= 1, "{x} * {r:?}: {got} vs {exact_value}");
            exact += usize::from(diff == 0);
        }
    }
    assert!(exact * 100 >= total * 97, "{exact} of {total} exact");
    // Saturation of the left shift.
    assert_eq!(
        multiply_by_quantized_multiplier(1 << 30, 1 << 30, 5),
        i32::MAX / 2 + 1
    );
    assert_eq!(
        multiply_by_quantized_multiplier(i32::MAX, i32::MAX, 30),
        i32::MAX - 1
    );
    assert_eq!(
        multiply_by_quantized_multiplier(i32::MIN, i32::MAX, 30),
        -i32::MAX
    );
}

#[test]
fn activation_quantisation_rounds_half_away_and_saturates() {
    let q = QuantParams {
        scale: 1.0,
        zero_point: 0,
    };
    assert_eq!(q.quantize(2.5), 3);
    assert_eq!(q.quantize(-2.5), -3);
    assert_eq!(q.quantize(2.4999), 2);
    assert_eq!(q.quantize(1000.0), 127);
    assert_eq!(q.quantize(-1000.0), -128);
    assert_eq!(q.quantize(f32::NAN), 0);
    assert_eq!(q.quantize(f32::INFINITY), 127);
    let q = QuantParams {
        scale: 0.5,
        zero_point: -10,
    };
    assert_eq!(q.quantize(1.0), -8);
    assert_eq!(q.dequantize(-8), 1.0);
    assert_eq!(q.quantize(f32::NAN), -10);
    let from_range = QuantParams::from_range(-1.0, 3.0).unwrap();
    assert_eq!(from_range.quantize(0.0), from_range.zero_point as i8);
    assert!((from_range.dequantize(-128) + 1.0).abs() <= from_range.scale);
    assert!((from_range.dequantize(127) - 3.0).abs() <= from_range.scale);
    for bad in [
        (0.0f32, 0),
        (f32::NAN, 0),
        (-1.0, 0),
        (1.0, 128),
        (1.0, -129),
    ] {
        assert!(QuantParams {
            scale: bad.0,
            zero_point: bad.1
        }
        .validate()
        .is_err());
    }
}

#[test]
fn silu_lut_matches_the_f64_definition() {
    let input = QuantParams {
        scale: 0.05,
        zero_point: 3,
    };
    let output = QuantParams {
        scale: 0.03,
        zero_point: -100,
    };
    let lut = silu_lut(input, output);
    for (i, &entry) in lut.iter().enumerate() {
        let q = i as i32 - 128;
        let x = 0.05f64 * f64::from(q - 3);
        let y = x / (1.0 + (-x).exp());
        let expected = ((y / f64::from(0.03f32)).round() as i32 - 100).clamp(-128, 127);
        assert_eq!(i32::from(entry), expected, "entry {i}");
    }
}

#[test]
fn add_params_follow_tflite() {
    let lhs = QuantParams {
        scale: 0.02,
        zero_point: 5,
    };
    let rhs = QuantParams {
        scale: 0.05,
        zero_point: -7,
    };
    let out = QuantParams {
        scale: 0.07,
        zero_point: 1,
    };
    let p = AddParams::new(lhs, rhs, out).unwrap();
    let twice_max = 2.0 * 0.05f32 as f64;
    let close = |r: Requant, real: f64| (r.real() - real).abs() <= real * 1e-9;
    assert!(close(p.lhs, f64::from(0.02f32) / twice_max));
    assert!(close(p.rhs, f64::from(0.05f32) / twice_max));
    assert!(close(
        p.output,
        twice_max / (f64::from(1u32 << 20) * f64::from(0.07f32))
    ));
}

#[test]
fn parameter_constructors_refuse_and_accept_exactly_at_their_bounds() {
    // Ranges: both ends must be finite; an empty range [0, 0] still gets a usable grid.
    for (low, high) in [
        (f32::NAN, 1.0),
        (-1.0, f32::INFINITY),
        (f32::NEG_INFINITY, 0.0),
    ] {
        assert!(
            QuantParams::from_range(low, high).is_err(),
            "[{low}, {high}]"
        );
    }
    let empty = QuantParams::from_range(0.0, 0.0).unwrap();
    assert_eq!((empty.scale, empty.zero_point), (1.0 / 255.0, -128));
    // Multipliers: shift 30 (real values up to 2^30) is the largest accepted.
    let largest = Requant::from_real(1.5 * f64::from(1u32 << 29)).unwrap();
    assert_eq!((largest.multiplier, largest.shift), (3 << 29, 30));
    assert!(Requant::from_real(f64::from(1u32 << 30)).is_err());
    // An add's parameters are checked pair by pair.
    let good = AddParams::default();
    assert!(good.validate().is_ok());
    for bad in [
        AddParams {
            lhs: Requant {
                multiplier: -1,
                shift: 0,
            },
            ..good
        },
        AddParams {
            rhs: Requant {
                multiplier: 1,
                shift: 31,
            },
            ..good
        },
        AddParams {
            output: Requant {
                multiplier: 1,
                shift: -32,
            },
            ..good
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn folded_biases_and_weight_scales_at_their_limits() {
    use ddm_firmware::format::MAX_BIAS;
    use ddm_firmware::quant::{fold_input_zero_point, quantize_per_channel};
    // bias - zero_point sum(w): at most 2^30 in magnitude, exactly 2^30 allowed.
    assert_eq!(fold_input_zero_point(MAX_BIAS, 0, &[1, 2]), Ok(MAX_BIAS));
    assert_eq!(fold_input_zero_point(-MAX_BIAS, 0, &[]), Ok(-MAX_BIAS));
    assert_eq!(fold_input_zero_point(10, 3, &[1, -4, 2]), Ok(13));
    assert!(fold_input_zero_point(MAX_BIAS, -1, &[1]).is_err());
    assert!(fold_input_zero_point(-MAX_BIAS, 1, &[1]).is_err());
    // Rows must split evenly; an all-zero row gets scale 1 (never 0).
    let (mut q, mut s) = (vec![0i8; 4], vec![0.0f32; 3]);
    assert!(quantize_per_channel(&[1.0; 4], 3, &mut q, &mut s).is_err());
    let mut none: [f32; 0] = [];
    assert!(quantize_per_channel(&[1.0; 4], 0, &mut q, &mut none).is_err());
    let mut s = vec![0.0f32; 2];
    quantize_per_channel(&[0.0, 0.0, -2.0, 1.0], 2, &mut q, &mut s).unwrap();
    assert_eq!(s, [1.0, 2.0 / 127.0]);
    assert_eq!(q, [0, 0, -127, 64]);
}
