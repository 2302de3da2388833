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


def generated_include_dir():
    """build/generated/fastconv_kernel_sources.h: each CUDA kernel family's source digest (its
    folder under csrc/cuda/, with csrc/cuda/common/, the shared headers of csrc/common/, and
    every header of another folder its files include, transitively: the Hopper family's gather
    mapping lives in implicit_gemm/), which the committed record of real-hardware runs
    (fastconv/_verified/) is checked against: a kernel is verified only at the sources it was
    verified at. The emulator (csrc/simt/) is not part of any GPU build and stays out. Rewritten
    only when it changes, so that one file recompiles."""
    import hashlib
    import re

    include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

    def with_includes(paths):
        seen, todo = set(), [p for p in paths if os.path.isfile(p)]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            with open(path, encoding="utf-8", errors="replace") as f:
                for name in include.findall(f.read()):
                    found = os.path.join("csrc", name)
                    if not name.startswith("simt/") and os.path.isfile(found):
                        todo.append(found)
                        # A kernel header's definitions, where they sit beside it
                        # (gather_mapping.cpp); csrc/common/ counts by its headers, as before.
                        for unit in (os.path.splitext(found)[0] + ext for ext in (".cpp", ".cu")):
                            if name.startswith("cuda/") and os.path.isfile(unit):
                                todo.append(unit)
        return sorted(seen)

    def digest(paths):
        h = hashlib.sha256()
        for path in (p for p in paths if os.path.isfile(p)):
            h.update(path.replace(os.sep, "/").encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
        return h.hexdigest()[:16]

    shared = sources("cuda/common/*") + sources("common/*.h")
    families = sorted(d for d in os.listdir(os.path.join("csrc", "cuda"))
                      if os.path.isdir(os.path.join("csrc", "cuda", d)) and d != "common")
    entries = [f"{family}={digest(with_includes(sources(f'cuda/{family}/**/*') + shared))}" for family in families]
    out_dir = os.path.join(ROOT, "build", "generated")
    os.makedirs(out_dir, exist_ok=True)
    text = ("// Generated by setup.py: each CUDA kernel family's source digest.\n"
            "#define FASTCONV_KERNEL_SOURCE_DIGESTS {" + ", ".join(f'"{e}"' for e in entries) + "}\n")
    header = os.path.join(out_dir, "fastconv_kernel_sources.h")
    if not os.path.exists(header) or open(header).read() != text:
        with open(header, "w") as f:
            f.write(text)
    return out_dir


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
            include_dirs=[os.path.join(ROOT, "csrc"), generated_include_dir()],
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
    include_dirs = [os.path.join(ROOT, "csrc"), generated_include_dir()]
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
    # The Hopper family (csrc/cuda/hopper/) is built for sm_90a alone, by FastconvBuild below:
    # wgmma and setmaxnreg exist only there, and the rest keeps every sm >= 80 of the list.
    hopper = sm90a_wanted()
    cuda_sources = sources("cuda/**/*.cpp") + [s for s in sources("cuda/**/*.cu") if s not in hopper_kernel_sources()]
    defines = [("FASTCONV_WITH_CUDA", "1")] + ([("FASTCONV_WITH_SM90A", "1")] if hopper else [])
    print(f"fastconv: the Hopper (sm_90a) kernels {'are' if hopper else 'are not'} built "
          f"({'sm 9.0 is in the architecture list' if hopper else 'no sm 9.0 in the architecture list'})")
    ext = CUDAExtension(
        "fastconv._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs + nvidia_include_dirs(),
        define_macros=defines,
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": NVCC_FLAGS,
        },
        extra_link_args=link_flags,
    )
    ext.fastconv_sm90a = hopper
    return ext


NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xptxas=-v"]


def hopper_kernel_sources():
    return sources("cuda/hopper/**/*.cu")


def sm90a_wanted():
    """Whether the architecture list names sm 9.0 (the H100 and H200), for which the Hopper
    family is built as sm_90a; without a list, whether the visible GPU is one."""
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if listed:
        return any(a.strip().split("+")[0].rstrip("a") == "9.0" for a in listed.replace(";", " ").split())
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def compile_sm90a_objects(ext, build_temp):
    """Compiles csrc/cuda/hopper/*.cu with nvcc for -gencode=arch=compute_90a,code=sm_90a only,
    with the flags torch gives the other units, into build_temp/sm90a; incremental (each object
    is rebuilt when it or a header its depfile names is newer). Returns the object paths."""
    import concurrent.futures
    import shlex
    import subprocess

    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    includes = [f"-I{d}" for d in list(ext.include_dirs) + include_paths(device_type="cuda")]
    import sysconfig

    includes.append(f"-I{sysconfig.get_paths()['include']}")
    defines = [f"-D{k}={v}" if v is not None else f"-D{k}" for k, v in ext.define_macros]
    defines += ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
    ccbin = ["-ccbin", os.environ["CC"]] if os.environ.get("CC") else []
    out_dir = os.path.join(build_temp, "sm90a")
    jobs = []
    for src in hopper_kernel_sources():
        obj = os.path.join(out_dir, os.path.relpath(src, "csrc").replace(os.sep, "__") + ".o")
        dep = obj + ".d"
        if os.path.exists(obj) and os.path.exists(dep):
            text = open(dep).read().replace("\\\n", " ")
            deps = shlex.split(text.split(":", 1)[1]) if ":" in text else []
            if all(os.path.exists(d) and os.path.getmtime(d) <= os.path.getmtime(obj) for d in deps + [src]):
                jobs.append((obj, None))
                continue
        cmd = ([nvcc] + ccbin + ["-c", src, "-o", obj, "-MD", "-MF", dep] + includes + defines + COMMON_NVCC_FLAGS
               + NVCC_FLAGS + ["--compiler-options", "-fPIC", "-gencode=arch=compute_90a,code=sm_90a"])
        jobs.append((obj, cmd))
    os.makedirs(out_dir, exist_ok=True)

    def run(job):
        obj, cmd = job
        if cmd is None:
            return obj
        print(" ".join(cmd), flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(res.stdout + res.stderr)  # ptxas' resource report, as for the other units
        if res.returncode != 0:
            raise RuntimeError(f"fastconv: nvcc failed on {cmd[3]} (sm_90a)")
        return obj

    workers = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run, jobs))


class FastconvBuild(BuildExtension):
    """torch's build, plus the sm_90a objects of the Hopper family linked into the extension."""

    def build_extension(self, ext):
        if getattr(ext, "fastconv_sm90a", False):
            ext.extra_objects = list(ext.extra_objects or []) + compile_sm90a_objects(ext, self.build_temp)
        super().build_extension(ext)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": FastconvBuild},
)
