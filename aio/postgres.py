"""A local PostgreSQL cluster for the all-in-one's replicas (and the tests):
initdb in a directory, served on a unix socket only (no TCP listener), run
as the ``postgres`` user, trust authentication on that socket (the directory
is 0700 for ``postgres``: only root and postgres reach it).

    pg = LocalPostgres("/var/lib/cloudnet/pg")
    pg.start()                    # initdb on first use; pg_ctl start -w
    url = pg.url("cloudnet")      # created if missing
    pg.stop()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess

USER = "cloudnet"


def pg_bin() -> str:
    """The newest installed server's bin directory (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                   key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    if not found:
        raise FileNotFoundError("no PostgreSQL server installed (apt-get install postgresql)")
    return found[-1]


class LocalPostgres:
    def __init__(self, directory: str, os_user: str = "postgres") -> None:
        self.dir = os.path.abspath(directory)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.os_user = os_user
        self.bin = pg_bin()

    def _run(self, tool: str, *args: str) -> str:
        argv = [os.path.join(self.bin, tool), *args]
        if os.geteuid() == 0 and self.os_user != "root":
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode:
            raise RuntimeError(f"{tool}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def start(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", USER)
        if self.running():
            return
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-o",
                  f"-k {self.dir} -c listen_addresses='' -c max_connections=200", "start")

    def running(self) -> bool:
        pid_file = os.path.join(self.data, "postmaster.pid")
        if not os.path.exists(pid_file):
            return False
        try:
            self._run("pg_ctl", "-D", self.data, "status")
            return True
        except RuntimeError:
            return False

    def url(self, database: str = "cloudnet") -> str:
        """The SQLAlchemy URL of ``database`` (created if missing)."""
        try:
            self._run("createdb", "-h", self.dir, "-U", USER, database)
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise
        return f"postgresql+psycopg://{USER}@/{database}?host={self.dir}"

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again with the same options (the log to its file:
        a server writing to our pipe would keep it open)."""
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-m", mode, "-w", "restart")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
