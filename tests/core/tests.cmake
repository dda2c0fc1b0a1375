# Torch-including test files: keep them few (each costs a Torch compile).
set(RETORT_TESTS_core
  ${CMAKE_CURRENT_LIST_DIR}/test_runtime.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_sampler.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_engine.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_tools.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_long_training.cpp
)
set(RETORT_TESTS_core_LIBS retort_core)
