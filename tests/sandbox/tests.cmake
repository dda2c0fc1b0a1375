set(RETORT_TESTS_sandbox
  ${CMAKE_CURRENT_LIST_DIR}/sandbox_test_util.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_abuse.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_executor.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_json.cpp
)
set(RETORT_TESTS_sandbox_LIBS retort_sandbox)
