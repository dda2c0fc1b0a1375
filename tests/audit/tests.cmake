set(RETORT_TESTS_audit
  ${CMAKE_CURRENT_LIST_DIR}/test_audit.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_chain_log.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_audit_tools.cpp
)
set(RETORT_TESTS_audit_LIBS retort_audit)
