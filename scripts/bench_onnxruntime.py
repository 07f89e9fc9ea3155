"""One network call of an ONNX export in onnxruntime, batch 1, one thread: the float model
and a QDQ int8 model from onnxruntime's static quantisation (per-channel int8 weights, int8
activations, calibrated on inputs spread over the timesteps). Prints one JSON object per
line, as `ddm bench-call --json` does. Run by scripts/bench-vs-onnxruntime.sh."""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess, rng, timestep):
    """Inputs of batch 1: x ~ N(0, I) of the model's sample shape, t the given timestep."""
    x_input, t_input = sess.get_inputs()[:2]
    shape = [1 if not isinstance(d, int) else d for d in x_input.shape]
    shape[0] = 1
    x = rng.standard_normal(shape).astype(np.float32)
    return {x_input.name: x, t_input.name: np.array([timestep], dtype=np.float32)}


class Calibration(CalibrationDataReader):
    """32 inputs: noise at timesteps spread over 0..999 (as the sampler visits them)."""

    def __init__(self, sess):
        rng = np.random.default_rng(0)
        self.items = iter([feeds(sess, rng, t) for t in np.linspace(0, 999, 32).round()])

    def get_next(self):
        return next(self.items, None)


def median_seconds(sess, inputs, seconds):
    for _ in range(3):
        sess.run(None, inputs)
    times = []
    started = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < seconds:
        at = time.perf_counter()
        sess.run(None, inputs)
        times.append(time.perf_counter() - at)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--timestep", type=int, default=500)
    args = parser.parse_args()

    float_sess = session(args.onnx)
    inputs = feeds(float_sess, np.random.default_rng(1), args.timestep)
    onnx_path = os.path.abspath(args.onnx)
    with tempfile.TemporaryDirectory() as tmp:
        # The pre-processing writes scratch files into the working directory.
        os.chdir(tmp)
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
        qdq = os.path.join(tmp, "qdq.onnx")
        quantize_static(
            prepared,
            qdq,
            Calibration(float_sess),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        int8_sess = session(qdq)
        for precision, sess in (("f32", float_sess), ("int8", int8_sess)):
            seconds = median_seconds(sess, inputs, args.seconds)
            print(
                json.dumps(
                    {
                        "engine": "onnxruntime " + ort.__version__,
                        "model": args.onnx,
                        "precision": precision,
                        "us_per_call": seconds * 1e6,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
