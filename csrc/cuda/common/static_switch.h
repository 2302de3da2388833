// Runtime flags to template constants, so that a kernel's branches on layout, bias or tile
// shape are compiled away: bool_switch(flag, [&](auto c) { kernel<decltype(c)::value>...; })
// instantiates the body for both values and runs the one that flag names. int_switch does the
// same over a list of allowed values and rejects any other.
#pragma once

#include <c10/util/Exception.h>

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

// int_switch<4, 8, 16>(v, body): body(std::integral_constant<int, v>{}) for a listed v.
template <int... Values, typename Body>
void int_switch(int value, Body&& body) {
  const bool matched =
      ((value == Values ? (body(std::integral_constant<int, Values>{}), true) : false) || ...);
  TORCH_CHECK(matched, "fastconv: no compiled instance for the value ", value);
}

}  // namespace fastconv::cuda
