// Runtime flags to template constants, so that a kernel's branches on layout, bias or tile
// shape are compiled away: bool_switch(flag, [&](auto c) { kernel<decltype(c)::value>...; })
// instantiates the body for both values and runs the one that flag names.
#pragma once

#include <type_traits>
#include <utility>

namespace fastconv::cuda {

template <typename Body>
void bool_switch(bool flag, Body&& body) {
  if (flag) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

}  // namespace fastconv::cuda
