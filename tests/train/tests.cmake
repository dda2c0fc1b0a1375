# Torch-including test files of src/train: keep them few (each costs a Torch compile).
set(RETORT_TESTS_train
  ${CMAKE_CURRENT_LIST_DIR}/test_losses.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_sft.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_grpo.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_grpo_objectives.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_eval.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_pipeline.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_bad_input.cpp
)
set(RETORT_TESTS_train_LIBS retort_core)
