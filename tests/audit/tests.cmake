set(RETORT_TESTS_audit
  ${CMAKE_CURRENT_LIST_DIR}/test_audit.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_chain_log.cpp
)
set(RETORT_TESTS_audit_LIBS retort_audit)
