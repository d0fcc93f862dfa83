"""A Dify-shaped checkout built from the stand-in (a TEST DOUBLE, not Dify), laid out as Dify's
repository is: api/ (pyproject.toml for uv, .env.example, app.py with `app` and `app.celery`) and
web/ (package.json whose `dev` script serves on --port/--hostname, .env.example)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDIN_API = ROOT / "tests" / "standin" / "api"

PYPROJECT = """\
# TEST DOUBLE: the difyops stand-in laid out like Dify's api/ (not Dify).
[project]
name = "dify-api-standin"
version = "1.13.3"
requires-python = ">=3.11,<3.13"
dependencies = [
  "flask>=3.0",
  "gevent>=24.2",
  "gunicorn>=22.0",
  "celery>=5.3",
  "redis>=5.0",
  "psycopg2-binary>=2.9",
  "sqlalchemy>=2.0,<2.1",  # the pool Dify builds its engine with (standin/db.py)
  "psycogreen>=1.0",
  "pytest>=8.0",
]

[tool.uv]
package = false

[tool.pytest.ini_options]
pythonpath = ["."]
"""

# Shaped like Dify's api/.env.example: its public defaults, localhost middleware.
API_ENV_EXAMPLE = """\
# Your App secret key will be used for securely signing the session cookie
# Make sure you are changing this key for your deployment with a strong key.
SECRET_KEY=

# Console API base URL
CONSOLE_API_URL=http://localhost:5001
CONSOLE_WEB_URL=http://localhost:3000
SERVICE_API_URL=http://localhost:5001
APP_API_URL=http://localhost:5001
APP_WEB_URL=http://localhost:3000
FILES_URL=http://localhost:5001

# redis configuration
REDIS_HOST=localhost
REDIS_PORT=6379
REDIS_USERNAME=
REDIS_PASSWORD=difyai123456
REDIS_DB=0

# celery configuration
CELERY_BROKER_URL=redis://:difyai123456@localhost:6379/1
CELERY_BACKEND=redis

# PostgreSQL database configuration
DB_USERNAME=postgres
DB_PASSWORD=difyai123456
DB_HOST=localhost
DB_PORT=5432
DB_DATABASE=dify

# Storage configuration
STORAGE_TYPE=opendal
OPENDAL_SCHEME=fs
OPENDAL_FS_ROOT=storage

# Vector database configuration
VECTOR_STORE=weaviate
WEAVIATE_ENDPOINT=http://localhost:8080
WEAVIATE_API_KEY=WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih

# Code execution
CODE_EXECUTION_ENDPOINT=http://127.0.0.1:8194
CODE_EXECUTION_API_KEY=dify-sandbox

# Plugin configuration
PLUGIN_DAEMON_KEY=lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi
PLUGIN_DAEMON_URL=http://127.0.0.1:5002
INNER_API_KEY_FOR_PLUGIN=QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1

LOG_LEVEL=INFO
DEBUG=false
"""

WEB_ENV_EXAMPLE = """\
# For production release, change this to PRODUCTION
NEXT_PUBLIC_DEPLOY_ENV=DEVELOPMENT
# The deployment edition, SELF_HOSTED
NEXT_PUBLIC_EDITION=SELF_HOSTED
# The base URL of console application, refers to the Console base URL of WEB service
NEXT_PUBLIC_API_PREFIX=http://localhost:5001/console/api
# The URL for Web APP, refers to the Web App base URL of WEB service
NEXT_PUBLIC_PUBLIC_API_PREFIX=http://localhost:5001/api
"""

# A tiny dev server in place of `next dev`: --port/--hostname as next dev takes them; it reads
# .env.local as Next.js does and re-reads src/page.txt on every request (a "hot" page).
SERVER_JS = """\
// TEST DOUBLE: stands in for `next dev` (not Dify).
const http = require('http');
const fs = require('fs');
const path = require('path');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const port = Number(opt('--port', process.env.PORT || 3000));
const host = opt('--hostname', '127.0.0.1');
const env = {};
for (const f of ['.env.local', '.env']) {
  if (!fs.existsSync(f)) continue;
  for (const line of fs.readFileSync(f, 'utf8').split('\\n')) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m && !(m[1] in env)) env[m[1]] = m[2];
  }
}
http.createServer((req, res) => {
  const page = fs.readFileSync(path.join(__dirname, 'src', 'page.txt'), 'utf8').trim();
  res.writeHead(200, {'content-type': 'text/html'});
  res.end(`<html><body><h1>Dify stand-in web (dev)</h1><p id="page">${page}</p>` +
          `<p id="api">${env.NEXT_PUBLIC_API_PREFIX || ''}</p></body></html>`);
}).listen(port, host, () => console.log(`ready - started server on ${host}:${port}`));
"""


def build(dest: Path) -> Path:
    """Lay out the checkout in ``dest`` and return it."""
    api = dest / "api"
    shutil.copytree(STANDIN_API, api, ignore=shutil.ignore_patterns("docker", "__pycache__", "*.pyc"))
    (api / "pyproject.toml").write_text(PYPROJECT)
    (api / ".env.example").write_text(API_ENV_EXAMPLE)
    (api / "tests" / "unit_tests").mkdir(parents=True)
    (api / "tests" / "unit_tests" / "test_smoke.py").write_text(
        "def test_app_module_imports_config():\n"
        "    from standin import config\n"
        "    assert 'workflow_based_app_execution' in config.DEFAULT_QUEUES.split(',')\n")
    web = dest / "web"
    (web / "src").mkdir(parents=True)
    (web / "src" / "page.txt").write_text("page v1\n")
    (web / "server.js").write_text(SERVER_JS)
    (web / ".env.example").write_text(WEB_ENV_EXAMPLE)
    (web / "test").mkdir()
    (web / "test" / "page.test.js").write_text(
        "const test = require('node:test'); const assert = require('node:assert');\n"
        "const fs = require('fs');\n"
        "test('page text exists', () => assert.match(fs.readFileSync('src/page.txt', 'utf8'), /page/));\n")
    (web / "package.json").write_text(json.dumps({
        "name": "dify-web-standin", "version": "1.13.3", "private": True,
        "engines": {"node": ">=20"},
        "scripts": {"dev": "node server.js", "start": "node server.js", "build": "node -e \"console.log('built')\"",
                    "lint": "node --check server.js", "test": "node --test test/"},
    }, indent=2) + "\n")
    return dest
