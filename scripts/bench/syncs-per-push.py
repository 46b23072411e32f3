import re, sys, collections
# Pushes of a strace -f log of sai-server (scripts/bench/strace-wrap.sh as SAI_SERVER_BIN):
# fsyncs of the pushed event's own files and of the main database between the
# push's mkdir and its offer's websocket write, per push.
L = open(sys.argv[1], errors='replace').read().splitlines()
mk = {}
hot = collections.Counter(); n = 0
for idx, l in enumerate(L):
    m = re.search(r'mkdir\("[^"]*events/([0-9A-F]{32})(\.tmp)?"', l)
    if m: mk[m.group(1)] = idx
    m = re.search(r'offer.{1,20}task_id[^0-9A-F]{1,6}([0-9A-F]{32})', l)
    if m and m.group(1) in mk:
        i = mk.pop(m.group(1)); n += 1
        own = m.group(1)
        for x in L[i:idx]:
            f = re.search(r'(fsync|fdatasync)\(\d+<([^>]*)>', x)
            if f:
                p = re.sub(r'/(tmp|dev/shm)/[^/]+/data/', '', f.group(2))
                if 'events/' in p and m.group(1) not in p: p = 'another event (background): ' + re.sub(r'events/[0-9A-F]{32}', 'events/X', p)
                p = re.sub(r'events/[0-9A-F]{32}', 'events/ID', p)
                hot[p] += 1
print(sys.argv[1], "pushes traced from mkdir to offer:", n)
for k, v in hot.most_common(): print("  %.2f per push  %s" % (v / n, k))
