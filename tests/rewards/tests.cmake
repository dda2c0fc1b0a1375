set(RETORT_TESTS_rewards "")
set(RETORT_TESTS_rewards_LIBS retort_rewards)
