"""Session-wide hooks of the test suite."""


def pytest_sessionfinish(session, exitstatus):
    from tests.helpers.failure_table import write_if_asked

    write_if_asked()
