#!/usr/bin/env python3
"""Runs every statedict command on each budget case and holds it to the cost budget (issue 11).

Usage: budget.py STATEDICT DIR [--time-only] [--time-factor=F] [CASE...]

DIR holds the cases gen_hostile.py wrote (budget_<case>.pt, listed in budget.tsv with what `ls`
must do and a key present for `show`). Each command runs in a child process, measured with
os.wait4 (peak RSS and CPU time, user + system, from its rusage):
    ls, dump --json, show FILE KEY (a present key), show FILE KEY (a missing one), diff FILE FILE,
    convert FILE TMP, verify, scan, convert --drop-non-tensors --copy-overlaps FILE TMP.safetensors
and must exit 0, 1 or 3 (never a signal, never a usage error), within
    peak RSS <= 64 x file size + 64 MB   and   CPU time <= 1 s per MB of file + 2 s.
CPU time, not wall time, so that a loaded machine does not fail the run; a child still running
after 10 x its CPU budget + 30 s of wall time is killed (a hang, or a cost the budget misses).
--time-only skips the memory bound (sanitizer builds: shadow memory distorts RSS);
--time-factor=F multiplies the time bound (an unoptimised sanitizer build runs several times
slower: it still catches a quadratic or exponential cost, which overshoots by far more).
"""
import os, resource, signal, subprocess, sys, tempfile, time

MB = 1 << 20


def run(argv, hard_timeout):
    """(exit status or -signal, CPU seconds, peak RSS bytes, stderr head)."""
    err = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    deadline = t0 + hard_timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.005)
    p.returncode = 0  # reaped here; keep Popen from waiting again
    err.seek(0)
    msg = err.read(400).decode('utf-8', 'replace').strip().replace('\n', ' | ')
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return rc, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, msg


def main():
    bin_, d = sys.argv[1], sys.argv[2]
    time_only = '--time-only' in sys.argv[3:]
    only = [a for a in sys.argv[3:] if not a.startswith('--')]  # case names, to run a few
    factor = 1.0
    for a in sys.argv[3:]:
        if a.startswith('--time-factor='):
            factor = float(a.split('=', 1)[1])
    fails, runs = 0, 0
    tmpdir = tempfile.mkdtemp(prefix='sdict-budget-')
    with open(os.path.join(d, 'budget.tsv')) as f:
        cases = [line.rstrip('\n').split('\t') for line in f if line.strip()]
    cases = [c for c in cases if not only or c[0] in only]
    print('budget: peak RSS <= 64 x size + 64 MB%s, CPU <= %s(1 s/MB + 2 s); %d cases x 9 commands'
          % (' (not checked: --time-only)' if time_only else '',
             '%g x ' % factor if factor != 1 else '', len(cases)))
    for name, expect, key in cases:
        path = os.path.join(d, 'budget_' + name + '.pt')
        size = os.path.getsize(path)
        mem_cap = 64 * size + 64 * MB
        time_cap = (size / MB + 2.0) * factor
        out = os.path.join(tmpdir, 'out.pt')
        out_st = os.path.join(tmpdir, 'out.safetensors')
        cmds = [('ls', ['ls', path]), ('dump', ['dump', '--json', path])]
        if key != '-':
            cmds.append(('show', ['show', path, key]))
        cmds += [('show-missing', ['show', path, 'no.such.key_' + name]),
                 ('diff', ['diff', path, path]), ('convert', ['convert', path, out]),
                 ('verify', ['verify', path]), ('scan', ['scan', path]),
                 ('convert-st', ['convert', '--drop-non-tensors', '--copy-overlaps', path, out_st])]
        print('%s: %d bytes, budget %.1f MB, %.2f s' % (name, size, mem_cap / MB, time_cap))
        for label, args in cmds:
            runs += 1
            rc, cpu, rss, msg = run([bin_] + args, 10 * time_cap + 30)
            problems = []
            if rc < 0:
                problems.append('killed by signal %d' % -rc)
            elif rc not in (0, 1, 3):
                problems.append('exit %d' % rc)
            if label == 'ls' and expect == 'ok' and rc != 0:
                problems.append('ls must succeed, exit %d' % rc)
            if label == 'ls' and expect == 'refused' and rc != 3:
                problems.append('ls must refuse (exit 3), exit %d' % rc)
            if rc == 3 and os.path.basename(path) not in msg and not (label.startswith('convert') and (out in msg or out_st in msg)):
                problems.append('error does not name the file')
            if label == 'show' and expect == 'ok' and rc != 0:
                problems.append('show of a present key must succeed, exit %d' % rc)
            if label == 'show-missing' and rc not in (1, 3):
                problems.append('show of a missing key must exit 1 (or 3 if unreadable), exit %d' % rc)
            if cpu > time_cap:
                problems.append('CPU %.2f s > %.2f s' % (cpu, time_cap))
            if not time_only and rss > mem_cap:
                problems.append('peak RSS %.1f MB > %.1f MB' % (rss / MB, mem_cap / MB))
            status = 'FAIL' if problems else 'ok'
            print('  %-4s %-12s exit %-3d %7.3f s %8.1f MB  %s%s' % (
                status, label, rc, cpu, rss / MB, '; '.join(problems),
                ('  [' + msg[:160] + ']') if (problems or rc == 3) and msg else ''))
            fails += bool(problems)
            for o in (out, out_st):
                if os.path.exists(o):
                    os.unlink(o)
    os.rmdir(tmpdir)
    print('budget: %d runs, %d over budget or failed' % (runs, fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
