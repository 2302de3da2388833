// The RoI family's configurations: block shapes and table layouts, checked here. Host and
// device both read this header; every constant the RoI kernels use comes from here, and the
// one-thread-per-element kernels take the default block (kThreads, launch_shape.h).
#pragma once

#include "cuda/common/launch_shape.h"

namespace fastconv::cuda::roi {

// RoIAlign's channels_last forward: a block takes one box and kChannels channels, thread
// (channel lane, bin lane) computing every kBinLanes-th bin of its channel, kBinChunk bins at a
// time staged in shared memory before they go out as runs.
struct NhwcForwardConfig {
  static constexpr int kChannels = 32, kBinLanes = 8, kBinChunk = 64;
  static constexpr int kThreads = kChannels * kBinLanes;
  // The staged tile: one channel's bins every (chunk | 1) words, so that the 32 lanes' writes
  // fall in 32 banks.
  static constexpr int kStagedWords = kChannels * (kBinChunk + 1);
  static_assert(kChannels == 32, "a warp's lanes take consecutive channels of one tap");
  static_assert(kThreads <= 1024 && kThreads % 32 == 0, "whole warps, one block");
};

// RoIAlign's gather backward: a thread sums kChannels channels of one input pixel, over a
// table of kTableColumns numbers per box (box, first row, last row, first column, last column).
struct GatherBackwardConfig {
  static constexpr int kChannels = 8;
  static constexpr int kTableColumns = 5;
  static_assert(kChannels >= 1 && kChannels <= 32, "the channel sums live in registers");
};

}  // namespace fastconv::cuda::roi
