// fastconv::simt -- CUDA emulation layer for running fastconv's kernels on the CPU.
// Include this one header. See runtime.h for the execution model, the checkers and the metrics.
#pragma once

#include "simt/runtime.h"
#include "simt/memory.h"
#include "simt/warp.h"
#include "simt/mma.h"
#include "simt/async.h"
#include "simt/hopper.h"
#include "simt/wgmma.h"
