# Data parallel (src/dist): multi-process tests through `retort launch`; one Torch test file.
set(RETORT_TESTS_dist
  ${CMAKE_CURRENT_LIST_DIR}/test_dist.cpp
)
set(RETORT_TESTS_dist_LIBS retort_core)
