// The Python extension module fastconv._C. Importing it loads the library, whose static
// registrations define the operators (csrc/fastconv.cpp); it has no Python functions of its
// own: everything, the algorithm queries included, is a torch.ops.fastconv operator.
//
// It also routes the operators' failed argument checks (common/checks.h) to fastconv.errors:
// torch's bindings turn c10::ValueError into a plain ValueError, which torch's callers, who
// catch RuntimeError, would miss; ArgumentError is both.
#include "common/checks.h"

#include <Python.h>
#include <pybind11/pybind11.h>

namespace {

// Raises fastconv.errors.ArgumentError or ArgumentTypeError with the check's message. The
// pybind11 exception carries the Python error across the dispatcher (and autograd's threads)
// to torch's binding, which restores it. Returns without throwing where Python cannot help
// (finalising, or the module not importable), and the caller raises the c10 error instead.
void raise_python_argument_error(fastconv::ArgumentErrorKind kind, const std::string& message) {
  if (!Py_IsInitialized()) return;
  pybind11::gil_scoped_acquire gil;
  PyObject* module = PyImport_ImportModule("fastconv.errors");
  if (module == nullptr) {
    PyErr_Clear();
    return;
  }
  const char* name =
      kind == fastconv::ArgumentErrorKind::type ? "ArgumentTypeError" : "ArgumentError";
  PyObject* cls = PyObject_GetAttrString(module, name);
  Py_DECREF(module);
  if (cls == nullptr) {
    PyErr_Clear();
    return;
  }
  PyErr_SetString(cls, message.c_str());
  Py_DECREF(cls);
  throw pybind11::error_already_set();
}

}  // namespace

extern "C" {

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  fastconv::set_argument_error_thrower(&raise_python_argument_error);
  return PyModule_Create(&module);
}

}  // extern "C"
