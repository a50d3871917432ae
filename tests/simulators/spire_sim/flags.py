"""A small imitation of Go's ``flag`` package as the SPIRE CLI uses it (``-name value``, ``-name=value``,
``--name``, boolean flags without value, repeatable flags)."""


class FlagError(Exception):
    pass


class FlagSet(object):
    def __init__(self, command):
        self.command = command
        self.specs = {}  # name -> (kind, default)

    def string(self, name, default=""):
        self.specs[name] = ("string", default)

    def int(self, name, default=0):
        self.specs[name] = ("int", default)

    def bool(self, name, default=False):
        self.specs[name] = ("bool", default)

    def repeated(self, name):
        self.specs[name] = ("list", None)

    def parse(self, argv):
        values = {}
        for name, (kind, default) in self.specs.items():
            values[name] = [] if kind == "list" else default
        args = list(argv)
        rest = []
        while args:
            arg = args.pop(0)
            if arg == "--":
                rest.extend(args)
                break
            if not arg.startswith("-") or arg == "-":
                rest.append(arg)
                rest.extend(args)
                break
            name = arg.lstrip("-")
            value = None
            if "=" in name:
                name, value = name.split("=", 1)
            if name in ("h", "help"):
                raise FlagError("help requested")
            if name not in self.specs:
                raise FlagError("flag provided but not defined: -%s" % name)
            kind = self.specs[name][0]
            if kind == "bool":
                if value is None:
                    values[name] = True
                else:
                    if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                        raise FlagError('invalid boolean value "%s" for -%s: parse error' % (value, name))
                    values[name] = value.lower() in ("1", "t", "true")
                continue
            if value is None:
                if not args:
                    raise FlagError("flag needs an argument: -%s" % name)
                value = args.pop(0)
            if kind == "int":
                try:
                    values[name] = int(value)
                except ValueError:
                    raise FlagError('invalid value "%s" for flag -%s: parse error' % (value, name))
            elif kind == "list":
                values[name].append(value)
            else:
                values[name] = value
        return values, rest

    def usage(self):
        lines = ["Usage of %s:" % self.command]
        for name in sorted(self.specs):
            kind = self.specs[name][0]
            lines.append("  -%s%s" % (name, "" if kind == "bool" else " " + ("int" if kind == "int" else "string")))
        return "\n".join(lines)
