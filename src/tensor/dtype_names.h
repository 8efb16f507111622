// The names users give a target dtype (`--dtype`, recipes): f16/fp16/half, bf16,
// f32/fp32/float, f64, f8_e4m3/fp8, f8_e5m2, case-insensitive; "keep" means no cast.
#pragma once

#include <optional>
#include <string_view>

#include "ckptkit/dtype.h"

namespace ckptkit {

struct TargetDtype {
  bool known = false;          ///< the name is one of the above
  std::optional<DType> dtype;  ///< empty for "keep"
};
TargetDtype target_dtype_from_name(std::string_view name);

/// For messages: "f16, bf16, f32, f8_e4m3, f8_e5m2 or keep".
inline constexpr std::string_view kTargetDtypeChoices = "f16, bf16, f32, f8_e4m3, f8_e5m2 or keep";

}  // namespace ckptkit
