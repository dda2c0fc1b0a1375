set(RETORT_TESTS_common
  ${CMAKE_CURRENT_LIST_DIR}/test_config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_error_log.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_layering.cpp
)
set(RETORT_TESTS_common_LIBS retort_common)
