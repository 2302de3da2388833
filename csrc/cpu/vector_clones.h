// The build carries no -march flag (a wheel must run on any x86-64), so the few loops that
// are worth wide vectors are compiled once per instruction-set level and picked at load time.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTCONV_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTCONV_VECTOR_CLONES
#endif
