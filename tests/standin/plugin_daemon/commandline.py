# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# /app/commandline of the dify-plugin-daemon stand-in, 0.6 line (difyops-standin/dify-plugin-daemon:v3).
# As dify-plugin-daemon 0.6.3's cmd/commandline/migrate.go (commit 54432d8a): `migrate` reads the
# environment, applies the defaults and checks the configuration (daemon_config.py, line 0.6): on a
# value it cannot parse it prints "error processing environment variables: <err>", on a rule it
# breaks "invalid configuration: <err>", and exits 1 (so the image's CMD, `/app/commandline migrate
# && exec /app/main`, never starts the server); then it creates the database when missing and its
# tables, and prints "database migration completed successfully". Since 0.6.0 this is the only
# place the daemon migrates.
import sys

import daemon_config

USAGE = "usage: commandline migrate"


def main(argv: list[str]) -> int:
    if argv != ["migrate"]:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        daemon_config.load(line=daemon_config.LINE_0_6)
    except daemon_config.ParseError as exc:
        print(f"error processing environment variables: {exc}", file=sys.stderr, flush=True)
        return 1
    except daemon_config.InvalidConfiguration as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr, flush=True)
        return 1
    import server  # the daemon's database code (it checks the same configuration again, silently)

    server.create_database(int(server.env("STANDIN_DB_CONNECT_RETRIES", "30")))
    print("database migration completed successfully", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
