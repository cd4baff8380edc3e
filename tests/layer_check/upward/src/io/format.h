// Fixture of the layering check's test (tests/CMakeLists.txt): an io header that includes a model
// header, which the build must refuse.
#pragma once
#include "core/tensor.h"
#include "model/model_config.h"
