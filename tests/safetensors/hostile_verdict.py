"""The real safetensors package's verdict on every hostile safetensors case (issue 12).

Usage: hostile_verdict.py STATEDICT WORKDIR   (run with a torch generation's python)

Writes each case of hostile_st.cases() to WORKDIR, runs `statedict ls` on it (must exit 3) and
safetensors' own reader on it: safe_open(path, framework="pt"), its keys and metadata, then
get_tensor of every key (pure reads; nothing is unpickled). Both must refuse, except the cases
in hostile_st.STRICTER, which safetensors loads and statedict refuses on purpose (the reason is
printed). A case safetensors loads that is not listed there fails the test, as does any case
statedict does not refuse with exit 3. Prints the table README.md shows.
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_st

try:
    import safetensors
    from safetensors import safe_open
except ImportError as e:
    print('skip: %s' % e)
    sys.exit(77)

BIN, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)


def st_verdict(path):
    """('loads', '') or ('refuses', the first line of safetensors' error)."""
    try:
        with safe_open(path, framework='pt') as f:
            f.metadata()
            for k in f.keys():
                f.get_tensor(k)
        return 'loads', ''
    except Exception as e:
        return 'refuses', (type(e).__name__ + ': ' + (str(e).splitlines() or [''])[0])[:90]


rows, bad = [], []
for name, data, statuses, want in hostile_st.cases():
    path = os.path.join(WORK, name + '.safetensors')
    with open(path, 'wb') as f:
        f.write(data)
    p = subprocess.run([BIN, 'ls', path], capture_output=True, timeout=60)
    ours = 'refuses' if p.returncode == 3 else 'exit %d' % p.returncode
    if p.returncode != 3 or want not in p.stderr.decode('utf-8', 'replace'):
        bad.append('%s: statedict %s, message %r lacks %r' % (name, ours, p.stderr[:200], want))
    theirs, why = st_verdict(path)
    note = ''
    if theirs == 'loads':
        if name in hostile_st.STRICTER:
            note = hostile_st.STRICTER[name]
        else:
            bad.append('%s: safetensors loads it and statedict refuses it, with no reason listed' % name)
            note = 'UNEXPLAINED'
    rows.append((name, ours, theirs, note or why))

print('safetensors %s: %d hostile cases' % (safetensors.__version__, len(rows)))
print('| case | statedict | safetensors %s | where they differ: why statedict refuses (else safetensors\' error) |' % safetensors.__version__)
print('|---|---|---|---|')
for r in rows:
    print('| `%s` | %s | %s | %s |' % r)
differ = [r[0] for r in rows if r[2] == 'loads']
print('differ on %d: %s' % (len(differ), ', '.join(differ) or '-'))
for b in bad:
    print('FAIL:', b)
sys.exit(1 if bad else 0)
