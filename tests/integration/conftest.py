"""pytest fixtures for Parley's integration and end-to-end tests.

  pg      session: one throwaway PostgreSQL cluster (harness.PgCluster)
  db      per test: a fresh database in it, dropped afterwards
  parley  per test: factory starting the real `parley serve` (harness.ParleyFactory)

When a test fails, the tail of every parley log it produced is attached to
the failure report.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def _sigterm(signum, frame):
    # Turn SIGTERM into a normal interruption so that fixtures' finalizers
    # and atexit handlers stop the cluster and the children.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        factory = getattr(item, "_parley_factory", None)
        if factory is not None:
            for p in factory.procs:
                rep.sections.append((f"parley log {p.name}", p.log_tail(80)))
        fakes = getattr(item, "_parley_fake_logs", None)
        for path in fakes or ():
            rep.sections.append((f"fake log {path}", harness.tail(path, 40)))


@pytest.fixture(scope="session")
def pg():
    if not os.path.exists(harness.parley_bin()):
        pytest.fail(f"parley binary not found: {harness.parley_bin()} "
                    "(set PARLEY_BIN or build it: make BUILD=asan build/asan/parley)")
    cluster = harness.PgCluster()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def db(pg):
    d = pg.create_db()
    yield d
    if not pg.running:
        # A test left the server stopped: bring it back for the next one.
        try:
            pg.start()
        except Exception:  # noqa: BLE001 - reported by the next test
            pass
    try:
        pg.drop_db(d)
    except Exception:  # noqa: BLE001 - leftovers vanish with the cluster
        pass


@pytest.fixture
def parley(request, pg, db):
    factory = harness.ParleyFactory(pg, db, harness.log_dir(), request.node.name)
    request.node._parley_factory = factory
    yield factory
    problems = factory.finish()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def pg_restore(pg):
    """For outage tests: guarantees the cluster runs again after the test."""
    yield pg
    if not pg.running or not pg.is_running():
        pg.start()


@pytest.fixture
def fake(request):
    """A running fakeup (tests/integration/fakes.py): the fake LLM and Graph
    API. Instagram sends are recognised by the test IG account id; the LLM
    requires the key the reply tests give Parley."""
    import fakes

    binary = str(harness.build_dir() / "tests" / "fakeup")
    f = fakes.Fake(binary=binary)
    request.node._parley_fake_logs = [f.log_path]
    try:
        f.control(graph_instagram_ids=[harness.IG_ID], llm_api_key="fake-llm-key")
        yield f
    finally:
        # Parley first: it must not shut down against a vanished upstream.
        factory = getattr(request.node, "_parley_factory", None)
        if factory is not None:
            factory.finish()
        try:
            f.stop(check=True)
        except fakes.FakeError as e:
            pytest.fail(str(e), pytrace=False)
