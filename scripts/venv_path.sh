# Sourced by the scripts (after `cd` to the repository root): sets PY, the interpreter that
# creates the virtualenv (PYTHON, default python3), and VENV, the virtualenv: MASK2FORMER_VENV,
# else .venv for the default interpreter and .venv-<name> (e.g. .venv-python3.13) for PYTHON.
PY=${PYTHON:-python3}
if ! "$PY" -V >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  # pyenv's shims answer only for the active versions; find the others in pyenv's root.
  PYENV_MATCH=$(pyenv versions --bare | grep -x "${PY#python}[.0-9]*" | tail -n1 || true)
  [ -n "$PYENV_MATCH" ] && PY=$(pyenv root)/versions/$PYENV_MATCH/bin/$PY
fi
if [ -n "${MASK2FORMER_VENV:-}" ]; then
  VENV=$MASK2FORMER_VENV
elif [ -n "${PYTHON:-}" ]; then
  VENV=$(pwd)/.venv-$(basename "$PYTHON")
else
  VENV=$(pwd)/.venv
fi
