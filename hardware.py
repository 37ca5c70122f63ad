"""The machine a run trains on: the device, the precision (bf16 autocast where the hardware has bf16 units), the
compiler's noise, and the machine's name that every run records."""

import contextlib

import torch


def pick_device(name: str = "auto") -> str:
    """'auto' -> the best available of cuda, mps, cpu; anything else is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is not allowed: this PyTorch sees no CUDA device; use 'auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("device='mps' is not allowed: MPS is not available here; use 'auto' or 'cpu'")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r} is not allowed: choose one of ['auto', 'cpu', 'cuda', 'mps']")
    return name


def cpu_bf16_units() -> str | None:
    """The name of the CPU's bf16 matrix units (AMX-BF16, AVX512-BF16, or Arm's BF16 extension) as the operating
    system reports them, or None: where they exist, bf16 autocast multiplies matrices in hardware; elsewhere
    oneDNN emulates bf16 and it is no faster than fp32. Read from /proc/cpuinfo (Linux) or sysctl (macOS)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            flags |= {"bf16"} if out == "1" else set()
        except (OSError, subprocess.SubprocessError):
            pass
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "Arm BF16")):
        if flag in flags:
            return name
    return None


def machine_name(device: str = "cpu") -> str:
    """What trains: the CPU's model name and its bf16 units ('AMD EPYC, AVX512-BF16'), or the GPU's name. Runs
    record it (TrainConfig.machine): the same configuration trained on two kinds of machine can differ by as much
    as the effects this project looks for, so comparisons keep to one kind."""
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    units = cpu_bf16_units()
    return f"{device}: {name}" + (f", {units}" if units else "")


def pick_precision(requested: str | None, device: str) -> tuple[str, str]:
    """(precision, why): what TrainConfig.precision means on `device`, as 'bf16' (bf16 autocast; weights, optimizer
    state and evaluation stay fp32) or 'fp32', and the reason, for the start-up line.

    'auto' takes bf16 on a CUDA card that supports it and on a CPU with bf16 units (cpu_bf16_units), fp32
    elsewhere (MPS too); None is the older rule, bf16 on CUDA only; 'bf16' and 'fp32' are taken as they are
    ('bf16' on MPS is refused, on a CPU without bf16 units it works, emulated and slow)."""
    if requested == "fp32":
        return "fp32", "precision='fp32'"
    if device == "mps":
        if requested == "bf16":
            raise ValueError("precision='bf16' is not allowed on MPS (this project trains there in fp32): "
                             "use 'auto' or 'fp32'")
        return "fp32", "MPS trains in fp32"
    if device == "cuda":
        if requested == "bf16":
            return "bf16", "precision='bf16'"
        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bf16"
        return "fp32", "this GPU has no bf16 support"
    units = cpu_bf16_units()
    if requested == "bf16":
        return "bf16", "precision='bf16'" + ("" if units else " (this CPU has no bf16 units: emulated, slow)")
    if requested is None:
        return "fp32", "the CPU trains in fp32 unless precision='auto' or 'bf16'"
    if units and torch.backends.mkldnn.is_available():
        return "bf16", f"the CPU has {units} units"
    return "fp32", "the CPU has no bf16 units" if not units else "this PyTorch has no oneDNN for bf16"


@contextlib.contextmanager
def quiet_compile():
    """Around the call that makes torch.compile trace: inductor's own FutureWarning about a deprecated internal
    (`torch._prims_common.check`) and torch's DeprecationWarning about `torch.jit.script_method`, which tell a user
    nothing and break the progress bar, are filtered there and only there."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check", category=FutureWarning)
        # and torch's own use of a deprecated decorator, met when compiling first imports the module that has it
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script_method. is deprecated",
                                category=DeprecationWarning)
        yield


def autocast(device: str, precision: str):
    """The context a training step's forward runs in: bf16 autocast for precision 'bf16', nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def available_memory(device: str) -> int | None:
    """Bytes of memory a run can still take on `device`: the GPU's free memory on CUDA, else the memory the
    operating system reports available (/proc/meminfo's MemAvailable, or psutil where installed); None if unknown."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None
