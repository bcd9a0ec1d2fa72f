"""Shared by the bench/gpu scripts: the torchvision architectures (random weights) exported to
ONNX once per machine under /tmp/kestrel-models, plus the bundled EfficientNet-Lite0."""
import os

MODEL_DIR = "/tmp/kestrel-models"


def export(names=("vgg16", "resnet50", "mobilenet_v2"), with_efficientnet=True):
    """{name: onnx path} for the named torchvision models (exported on first use)."""
    import torch
    import torchvision
    os.makedirs(MODEL_DIR, exist_ok=True)
    x = torch.randn(1, 3, 224, 224)
    paths = {}
    for name in names:
        p = f"{MODEL_DIR}/{name}.onnx"
        if not os.path.exists(p):
            net = getattr(torchvision.models, name)(weights=None).eval()
            torch.onnx.export(net, x, p, opset_version=13, input_names=["input"], output_names=["output"],
                              dynamo=False)
        paths[name] = p
    if with_efficientnet:
        paths["efficientnet_lite0"] = "assets/models/efficientnet_lite0.onnx"
    return paths


def bench(kestrel, path, prec, env_extra, conv="auto", runs=30):
    """Median ms of `kestrel bench` on the GPU (`--precision prec`, `--conv-algo conv`, extra
    environment variables), or {"error": ...} when the run failed."""
    import json, subprocess
    env = dict(os.environ)
    env.update(env_extra)
    cp = subprocess.run([kestrel, "bench", path, "--backend", "gpu", "--precision", prec, "--runs", str(runs),
                         "--warmup", "3", "--conv-algo", conv, "--json"], capture_output=True, text=True, env=env)
    if cp.returncode != 0:
        return {"error": cp.stderr[-600:]}
    return json.loads(cp.stdout)["median_ms"]
