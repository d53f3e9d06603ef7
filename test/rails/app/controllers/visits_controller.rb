# GETs that write, as apps have them: a visit counter touched in the
# controller, and one touched while the view renders (a helper that
# counts, a lazy "mark as read").
class VisitsController < ApplicationController
  def touch
    visit = PageView.create!(path: request.path)
    render plain: "visit #{visit.id}"
  end

  def page
  end
end
