// Fixture of the layering check's test: a model header that includes io, which is allowed.
#pragma once
#include "io/format.h"
