from proximity.cli import app

app(prog_name="proximity")
