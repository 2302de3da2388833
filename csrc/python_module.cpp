// The Python extension module fastconv._C. Importing it loads the library, whose static
// registrations define the operators; it has no Python functions of its own. The algorithm
// override is a process setting, reached from Python through ctypes (fastconv/algorithms.py).
#include <Python.h>

#include "common/algorithms.h"

#include <ATen/Parallel.h>

#include <cstring>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>

extern "C" {

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

__attribute__((visibility("default"))) void fastconv_set_forced_algorithm(const char* name) {
  fastconv::set_forced_algorithm(name ? name : "");
}

// Writes the forced name (NUL-terminated, truncated to capacity) and returns its length.
__attribute__((visibility("default"))) size_t fastconv_forced_algorithm(char* out,
                                                                        size_t capacity) {
  const std::string name = fastconv::forced_algorithm();
  if (capacity > 0) {
    const size_t n = std::min(name.size(), capacity - 1);
    std::memcpy(out, name.data(), n);
    out[n] = '\0';
  }
  return name.size();
}

// Comma-separated names of a device's algorithms in order (device: 0 = CPU, 1 = CUDA).
__attribute__((visibility("default"))) size_t fastconv_algorithm_names(int device, char* out,
                                                                       size_t capacity) {
  const auto type = device == 1 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  std::string names;
  try {
    for (const auto& a : fastconv::conv_algorithms(type))
      names += std::string(names.empty() ? "" : ",") + a.name;
  } catch (const std::exception&) {
    names.clear();  // no kernels for that device in this build
  }
  if (capacity > 0) {
    const size_t n = std::min(names.size(), capacity - 1);
    std::memcpy(out, names.data(), n);
    out[n] = '\0';
  }
  return names.size();
}

// How many threads an at::parallel_for compiled into this library runs on: the build must
// give ATen's header-only OpenMP loop its -fopenmp, or every kernel silently runs serially.
__attribute__((visibility("default"))) int fastconv_parallel_threads(void) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  at::parallel_for(0, 1 << 12, 1, [&](int64_t, int64_t) {
    // Long enough that no thread finishes the whole range before the others start.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int>(seen.size());
}

}  // extern "C"
