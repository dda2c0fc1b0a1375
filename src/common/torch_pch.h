// Precompiled header for every Torch-including translation unit.
#pragma once
#include <torch/torch.h>
