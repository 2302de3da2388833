"""Builds fastconv._C: the CPU kernels always, the CUDA kernels when a CUDA build of torch and
nvcc are both present. FASTCONV_CUDA=1 demands CUDA (and fails without it), FASTCONV_CUDA=0
skips it. With no GPU visible, TORCH_CUDA_ARCH_LIST defaults to 9.0 (H100)."""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The toolkit directory: CUDA_HOME/CUDA_PATH if set, else where nvcc really lives."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = ["/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.exists(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    # torch.utils.cpp_extension reads it once, at import.
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def cuda_decision():
    setting = os.environ.get("FASTCONV_CUDA", "").strip()
    torch_cuda = torch.version.cuda
    if setting == "0":
        return False, "FASTCONV_CUDA=0"
    missing = []
    if torch_cuda is None:
        missing.append(f"torch {torch.__version__} is a CPU-only build")
    if CUDA_HOME is None:
        missing.append("nvcc was not found (set CUDA_HOME)")
    if setting == "1" and missing:
        sys.exit("fastconv: FASTCONV_CUDA=1 but " + "; ".join(missing))
    if missing:
        return False, "; ".join(missing)
    return True, f"torch {torch.__version__} (CUDA {torch_cuda}), toolkit {CUDA_HOME}"


def nvidia_include_dirs():
    """Headers of torch's nvidia pip packages (cusparse.h and friends, which ATen's CUDA headers
    include and a bare toolkit may lack)."""
    dirs = []
    try:
        import nvidia  # namespace package installed with CUDA builds of torch

        for base in nvidia.__path__:
            dirs += sorted(glob.glob(os.path.join(base, "cu*", "include")))
            dirs += sorted(glob.glob(os.path.join(base, "*", "include")))
    except ImportError:
        pass
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", pattern), recursive=True))


def openmp_flags():
    """at::parallel_for is a header template: with ATen's OpenMP backend its `omp parallel`
    is compiled into this library, and without -fopenmp it silently runs on one thread."""
    uses_openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    return ["-fopenmp"] if uses_openmp and sys.platform.startswith("linux") else []


def simt_sources():
    """The CUDA sources for the emulation build: each .cu (and cuda/ .cpp) compiled as host
    C++ through a one-line .cpp that includes it, since the host compiler takes no .cu files."""
    out_dir = os.path.join("build", "simt_sources")
    os.makedirs(out_dir, exist_ok=True)
    wrappers = []
    for src in sources("cuda/**/*.cu") + sources("cuda/**/*.cpp"):
        rel = os.path.relpath(src, "csrc")
        wrapper = os.path.join(out_dir, rel.replace(os.sep, "__") + ".cpp")
        text = f'#include "{rel}"\n'
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        wrappers.append(wrapper)
    return wrappers


def extension():
    if os.environ.get("FASTCONV_SIMT", "").strip() == "1":
        # The emulation build: the CPU build plus the CUDA kernels compiled for the host
        # against csrc/simt/, for fastconv.testing.emulated_cuda(). No nvcc, no GPU.
        print("fastconv: building CPU kernels and the emulated CUDA kernels (FASTCONV_SIMT=1)")
        cpu_sources = sources("*.cpp") + sources("common/**/*.cpp") + sources("cpu/**/*.cpp")
        flags = ["-std=c++20", "-O2", "-fvisibility=hidden"] + openmp_flags()
        return CppExtension(
            "fastconv._C",
            cpu_sources + simt_sources(),
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=[("FASTCONV_SIMT", "1")],
            extra_compile_args={"cxx": flags},
            extra_link_args=openmp_flags() + ["-pthread"],
        )
    use_cuda, reason = cuda_decision()
    # Every source under each folder, subfolders included: a kernel family lives in a folder
    # of its own (the rules are at the top of csrc/cuda/kernels.h).
    cpu_sources = sources("*.cpp") + sources("common/**/*.cpp") + sources("cpu/**/*.cpp")
    # Stated, not inherited: torch 2.11's cpp_extension defaults to C++17, later ones to C++20.
    cxx_flags = ["-std=c++20", "-O3", "-fvisibility=hidden"] + openmp_flags()
    link_flags = openmp_flags()
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not use_cuda:
        print(f"fastconv: building CPU kernels only ({reason})")
        return CppExtension(
            "fastconv._C",
            cpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    print(
        f"fastconv: building CPU and CUDA kernels ({reason}); "
        f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', 'the visible GPUs')}"
    )
    cuda_sources = sources("cuda/**/*.cpp") + sources("cuda/**/*.cu")
    return CUDAExtension(
        "fastconv._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs + nvidia_include_dirs(),
        define_macros=[("FASTCONV_WITH_CUDA", "1")],
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xptxas=-v"],
        },
        extra_link_args=link_flags,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
