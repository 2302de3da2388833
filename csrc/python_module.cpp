// The Python extension module fastconv._C. Importing it loads the library, whose static
// registrations define the operators (csrc/fastconv.cpp); it has no Python functions of its
// own: everything, the algorithm queries included, is a torch.ops.fastconv operator.
#include <Python.h>

extern "C" {

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

}  // extern "C"
