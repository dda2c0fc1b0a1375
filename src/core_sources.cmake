# Torch-including sources of retort_core. Keep this list short: each entry costs a
# Torch compile. Modules append their files here.
set(RETORT_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/common/runtime.cpp
)
