set(RETORT_TESTS_sandbox "")
set(RETORT_TESTS_sandbox_LIBS retort_sandbox)
