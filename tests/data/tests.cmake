set(RETORT_TESTS_data
  ${CMAKE_CURRENT_LIST_DIR}/test_traces.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_prompts.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_synthetic.cpp
)
set(RETORT_TESTS_data_LIBS retort_text)
