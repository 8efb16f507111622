// Access to the embedded published layouts: every tensor name, dtype and shape of real files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/safetensors.h"
#include "ckptkit/status.h"

namespace ckptkit {

/// Names of the embedded layouts, sorted.
std::vector<std::string> layout_names();

/// The tensors of a layout in table order. NotFound (listing the names) for an unknown layout.
Result<std::vector<TensorLayout>> load_layout(std::string_view name);

}  // namespace ckptkit
