set(RETORT_TESTS_audit
  ${CMAKE_CURRENT_LIST_DIR}/test_audit.cpp
)
set(RETORT_TESTS_audit_LIBS retort_common)
